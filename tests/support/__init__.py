"""Integration-test harness for hpc-mirror: real upstreams and realistic content.

- :mod:`.processes`: server child processes on free loopback ports, probed until they
  answer and stopped by their own PID (:func:`~.processes.stop_process`).
- :mod:`.registry`: run Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1
  and count the requests it received from its access log.
- :mod:`.proxy`: run ``mirror serve`` with a test config, as users run it.
- :mod:`.token_issuer`: a Bearer token server the registry trusts (``auth.token``).
- :mod:`.seed`: a small push client and :func:`~.seed.seed_all`, the standard content.
- :mod:`.sifwriter`: build SIF files (Singularity/Apptainer images) byte by byte.
- :mod:`.faulty`: an upstream that breaks transfers on purpose.
- :mod:`.oci`: media types, digests, descriptors and image-building helpers.

Typical fixture bodies (conftest wraps them)::

    with RegistryProcess() as upstream:
        seeded = seed_all(RegistryClient(upstream.url))
        ...

    issuer = TokenIssuer("user", "pw", workdir=tmp_path).start()
    upstream = RegistryProcess(auth=("token", issuer.settings)).start()
"""

from .faulty import FaultyUpstream
from .processes import ServerProcess, StartError, free_port, stop_process
from .registry import LoggedRequest, RegistryProcess, write_htpasswd
from .seed import RegistryClient, Seeded, SeededImage, seed_all
from .token_issuer import TokenIssuer, TokenSettings

__all__ = [
    "FaultyUpstream",
    "LoggedRequest",
    "RegistryClient",
    "RegistryProcess",
    "Seeded",
    "SeededImage",
    "ServerProcess",
    "StartError",
    "TokenIssuer",
    "TokenSettings",
    "free_port",
    "seed_all",
    "stop_process",
    "write_htpasswd",
]
