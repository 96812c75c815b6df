"""What a SIF built from an OCI image says about it, derived from the image alone (so two
conversions of one image agree byte for byte): the definition file, the runscript from
Entrypoint/Cmd, the environment script from Env, labels, and the SIF's JSON objects."""

from __future__ import annotations

import json
import re
import shlex

from mirror.convert.image import SourceImage
from mirror.sif.format import ARCHES

# Bump when the bytes of a converted SIF change for the same source image: a conversion is
# reproducible for one source manifest digest and one converter version.
CONVERTER_VERSION = "1"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def sif_arch(image: SourceImage) -> str:
    """The SIF architecture (Go's name) of the image's config; "unknown" when not one SIF
    has a code for."""
    return image.architecture if image.architecture in ARCHES else "unknown"


def definition(image: SourceImage) -> str:
    """The definition file an `apptainer build x.sif docker://<reference>` records."""
    return f"bootstrap: docker\nfrom: {image.reference}\n\n"


def runscript(image: SourceImage) -> str:
    """Run Entrypoint then Cmd as `docker run` does: arguments given replace Cmd, and every
    word reaches the program as it is (nothing is evaluated by the shell)."""
    lines = [
        "#!/bin/sh",
        "# The image's Entrypoint and Cmd, as `docker run` runs them: arguments replace Cmd.",
        f"# Entrypoint: {json.dumps(list(image.entrypoint))}",
        f"# Cmd: {json.dumps(list(image.cmd))}",
    ]
    if image.cmd:
        lines += ["if [ $# -eq 0 ]; then", f"    set -- {shlex.join(image.cmd)}", "fi"]
    if image.entrypoint:
        lines.append(f'set -- {shlex.join(image.entrypoint)} "$@"')
    lines += [
        "if [ $# -eq 0 ]; then",
        '    echo "this image sets no Entrypoint or Cmd: give the command to run" >&2',
        "    exit 1",
        "fi",
        'exec "$@"',
    ]
    return "\n".join(lines) + "\n"


def environment(image: SourceImage) -> str:
    """`10-docker2singularity.sh`: the image's Env. PATH is set; every other variable is a
    default a value from the host overrides, as in SIFs Apptainer builds."""
    lines = ["#!/bin/sh", "# The image's Env."]
    for item in image.env:
        name, has_value, value = item.partition("=")
        if not _ENV_NAME.fullmatch(name):
            continue  # not a shell variable name: the shell could not export it
        if not has_value:
            lines.append(f'{name}="${{{name}:-}}"')
        elif name == "PATH":
            lines.append(f"PATH={shlex.quote(value)}")
        else:
            lines.append(f'if [ -z "${{{name}:-}}" ]; then {name}={shlex.quote(value)}; fi')
        lines.append(f"export {name}")
    return "\n".join(lines) + "\n"


def labels(image: SourceImage, arch: str) -> dict[str, str]:
    """The image's labels plus the build labels Apptainer adds, with the image's own
    creation time where a build would write "now"."""
    found = dict(image.labels)
    found.update(
        {
            "org.label-schema.schema-version": "1.0",
            "org.label-schema.build-arch": arch,
            "org.label-schema.usage.singularity.deffile.bootstrap": "docker",
            "org.label-schema.usage.singularity.deffile.from": image.reference,
            "org.opencontainers.image.architecture": arch,
            "org.opencontainers.image.base.name": image.reference,
            "org.opencontainers.image.base.digest": str(image.manifest_digest),
            "org.label-schema.usage.hpc-mirror.converter": CONVERTER_VERSION,
        }
    )
    if image.variant:
        found["org.opencontainers.image.variant"] = image.variant
    if image.created:
        found["org.opencontainers.image.created"] = image.created
    return found


def labels_json(found: dict[str, str]) -> bytes:
    """`/.singularity.d/labels.json`: sorted, tab-indented, as Apptainer writes it."""
    return json.dumps(found, indent="\t", sort_keys=True, ensure_ascii=False).encode()


def inspect_metadata(image: SourceImage, found: dict[str, str]) -> bytes:
    """The `inspect-metadata.json` object `apptainer inspect` reads from the SIF."""
    attributes = {
        "environment": {
            "/.singularity.d/env/10-docker2singularity.sh": environment(image),
        },
        "labels": found,
        "runscript": runscript(image),
        "deffile": definition(image),
    }
    document = {"data": {"attributes": attributes}, "type": "container"}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def oci_config(image: SourceImage) -> bytes:
    """The `oci-config.json` object: the image config's container config, as Apptainer
    stores it for docker:// builds."""
    return json.dumps(image.container_config, separators=(",", ":"), ensure_ascii=False).encode()
