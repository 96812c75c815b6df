"""contrib/hpc-mirror.service as systemd itself reads it (`systemd-analyze verify` and
`security --offline`), and the settings the README promises of it."""

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from mirror import config

UNIT = Path(__file__).parent.parent / "contrib" / "hpc-mirror.service"
INSTALLED_MIRROR = "/opt/hpc-mirror/bin/mirror"  # where the unit expects the venv


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=120, check=False
    )


def unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart naming this environment's `mirror` script (verify refuses a
    command that does not exist); not a byte else changes."""
    here = Path(sys.executable).with_name("mirror")
    assert here.is_file(), "the package's `mirror` script is installed beside the interpreter"
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED_MIRROR} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_MIRROR} ", f"ExecStart={here} "))
    return copy


def complaints(result: subprocess.CompletedProcess) -> list[str]:
    """What systemd-analyze said about our unit (not about units of the host it pulls in)."""
    return [line for line in result.stderr.splitlines() if UNIT.name in line]


def test_systemd_verify_accepts_the_unit(tmp_path):
    result = analyze("verify", str(unit_here(tmp_path)))
    assert (result.returncode, complaints(result)) == (0, []), result.stderr


def test_the_only_change_for_verify_is_the_missing_binary(tmp_path):
    (tmp_path / "as-shipped").mkdir()
    shipped = tmp_path / "as-shipped" / UNIT.name
    shipped.write_text(UNIT.read_text())
    assert complaints(analyze("verify", str(shipped))) == [
        f"{UNIT.name}: Command {INSTALLED_MIRROR} is not executable: No such file or directory"
    ]


def test_the_hardening_keeps_exposure_low(tmp_path):
    result = analyze("security", "--offline=true", str(unit_here(tmp_path)))
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found[1]) <= 2.0 and found[2] == "OK", found[0]  # with only User=: 9.2 UNSAFE


def directives(text: str) -> dict[str, list[str]]:
    """Key -> its values in order (a key may repeat), comments and section headers left out."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_runs_the_mirror_as_the_readme_says():
    unit = directives(UNIT.read_text())
    assert shlex.split(unit["ExecStart"][0]) == [
        INSTALLED_MIRROR,
        "serve",
        "--config",
        "/etc/hpc-mirror/config.toml",
    ]
    assert unit["User"] == ["hpc-mirror"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["LimitNOFILE"] == ["65536"]
    assert unit["ProtectSystem"] == ["strict"]
    cache_root = unit["RequiresMountsFor"][0]
    writable = unit["ReadWritePaths"][0].split()
    assert writable == [cache_root, "/var/lib/hpc-mirror", "/var/log/hpc-mirror"]
    assert unit["StateDirectory"] == unit["LogsDirectory"] == ["hpc-mirror"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Restart"] == ["on-failure"]
    # SIGTERM to the main process (which stops its workers), and time for the grace period.
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    server_defaults = tomllib.loads(config.default_config_text())["server"]
    grace = server_defaults.get("shutdown_grace_seconds", 30)  # 30: the default
    assert grace < int(unit["TimeoutStopSec"][0]) <= grace + 30
