"""The static HTML catalog (`mirror render`): a typed model of what is cached, facts read
from manifests, configs and SIFs, charts, and the atomic site writer. It reads the cache
only; it never talks to the proxy or an upstream."""
