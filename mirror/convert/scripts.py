"""The fixed files of the Apptainer runtime tree (`/.singularity.d/`), written for this
project: what Apptainer's `exec`, `run`, `shell`, `instance start` and `test` actions run
inside the container, and the environment scripts they source in name order."""

from __future__ import annotations

_SOURCE_ENV = """\
for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
"""


def _with_app(script: str) -> str:
    """With --app: run that SCIF app's `script` instead of the image's."""
    return f"""\
if [ -n "${{SINGULARITY_APPNAME:-}}" ]; then
    app_script="/scif/apps/$SINGULARITY_APPNAME/scif/{script}"
    if [ ! -x "$app_script" ]; then
        echo "no {script} for app $SINGULARITY_APPNAME in this image" >&2
        exit 1
    fi
    exec "$app_script" "$@"
fi
"""


ACTION_EXEC = f"""\
#!/bin/sh
# apptainer exec: the image's environment, then the command given.
{_SOURCE_ENV}
exec "$@"
"""

ACTION_RUN = f"""\
#!/bin/sh
# apptainer run: the image's environment, then its runscript (or an app's, with --app).
{_SOURCE_ENV}
{_with_app("runscript")}\
if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript "$@"
fi
echo "no runscript in this image: running /bin/sh" >&2
exec /bin/sh "$@"
"""

ACTION_SHELL = f"""\
#!/bin/sh
# apptainer shell: the image's environment, then $SINGULARITY_SHELL, bash or sh.
{_SOURCE_ENV}
if [ -n "${{SINGULARITY_SHELL:-}}" ] && [ -x "$SINGULARITY_SHELL" ]; then
    exec "$SINGULARITY_SHELL" "$@"
fi
if [ -x /bin/bash ]; then
    SHELL=/bin/bash
    PS1="Apptainer ${{APPTAINER_NAME:-}}:\\\\w> "
    export SHELL PS1
    exec /bin/bash --norc "$@"
fi
if [ -x /bin/sh ]; then
    SHELL=/bin/sh
    export SHELL
    exec /bin/sh "$@"
fi
echo "this image has no /bin/sh" >&2
exit 1
"""

ACTION_START = f"""\
#!/bin/sh
# apptainer instance start: let the instance's PID 1 go on, then run the startscript.
kill -CONT 1
{_SOURCE_ENV}
if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript
fi
"""

ACTION_TEST = f"""\
#!/bin/sh
# apptainer test: the image's environment, then its test script (or an app's, with --app).
{_SOURCE_ENV}
{_with_app("test")}\
if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test "$@"
fi
echo "no test in this image" >&2
exec /bin/sh -c true
"""

ENV_BASE = """\
#!/bin/sh
# Sourced first: nothing to set for an image converted from OCI.
"""

ENV_ENVIRONMENT = """\
#!/bin/sh
# The %environment section of a definition file goes here; an image converted from OCI
# has its Env in 10-docker2singularity.sh.
"""

ENV_APPS_BASE = """\
#!/bin/sh
# Exports for SCIF apps: an image converted from OCI has none.
"""

ENV_APPS = """\
#!/bin/sh
# With --app: the app's directories on PATH and LD_LIBRARY_PATH, its environment sourced.
if [ -n "${SINGULARITY_APPNAME:-}" ]; then
    export SINGULARITY_APPNAME
    SCIF_APPS=/scif/apps
    SCIF_APPROOT="/scif/apps/$SINGULARITY_APPNAME"
    if [ ! -d "$SCIF_APPROOT" ]; then
        echo "no app $SINGULARITY_APPNAME in this image" >&2
        exit 1
    fi
    export SCIF_APPS SCIF_APPROOT
    PATH="$SCIF_APPROOT:$PATH"
    if [ -d "$SCIF_APPROOT/bin" ]; then
        PATH="$SCIF_APPROOT/bin:$PATH"
    fi
    if [ -d "$SCIF_APPROOT/lib" ]; then
        LD_LIBRARY_PATH="$SCIF_APPROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
    for app_env in "$SCIF_APPROOT"/scif/env/01-base.sh "$SCIF_APPROOT"/scif/env/90-environment.sh
    do
        if [ -f "$app_env" ]; then
            . "$app_env"
        fi
    done
    export PATH
fi
"""

ENV_LAST = """\
#!/bin/sh
# Sourced last but one: the runtime's bind-mounted libraries, and a prompt.
LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/.singularity.d/libs"
PS1="${PS1:-Apptainer> }"
export LD_LIBRARY_PATH PS1
"""

ENV_RUNTIME_VARS = """\
#!/bin/sh
# Sourced last: PATH as --env PATH, PREPEND_PATH or APPEND_PATH asked the runtime for.
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PREPEND_PATH:$PATH"
fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="$PATH:$SING_USER_DEFINED_APPEND_PATH"
fi
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PATH"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
"""

STARTSCRIPT = """\
#!/bin/sh
# What `apptainer instance start` runs: an image converted from OCI starts nothing.
"""
