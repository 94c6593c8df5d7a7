"""Installing batchd as a service: what ``pip install .`` brings, the service install of README
"Install", the unit it renders (``systemd-analyze verify``), ``--version`` and the default
configuration file every command reads.

* Every third-party package ``daemon/`` and ``adapters/`` import is a declared runtime
  dependency, and no test tool is one.
* ``make install-service PREFIX=...`` (offline here: ``--no-deps --no-build-isolation``, the
  dependencies and setuptools come from the developer venv on ``PYTHONPATH``) builds and installs
  batchd itself, not an editable link to this checkout; its ``batchd --version`` answers; the
  unit it writes names PREFIX's paths and, installed where README says, passes
  ``systemd-analyze verify`` (skipped only where systemd-analyze is missing).
* ``/etc/batchd/batchd.toml`` is read by ``run``, ``submit`` and ``status`` when no other file is
  named: in a private mount namespace over an overlay of ``/etc`` (root only), so the machine's
  ``/etc`` is never touched.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from daemon import __version__
from daemon.config import DEFAULT_CONFIG, config_path

from .daemon_harness import REPO, daemon_env, run_cli, write_jsonl

TEST_TOOLS = {"pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "ruff", "mypy"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = lambda specs: {_norm(re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0]) for s in specs}  # noqa: E731
    return names(project["dependencies"]), names(project["optional-dependencies"]["test"])


def _imported_top_names() -> set[str]:
    names: set[str] = set()
    for folder in ("daemon", "adapters"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"daemon", "adapters", "__future__"}


def test_every_imported_package_is_a_runtime_dependency_and_no_test_tool_is() -> None:
    runtime, test = _declared()
    dists = packages_distributions()
    missing = {}
    for name in sorted(_imported_top_names()):
        owners = {_norm(d) for d in dists.get(name, [])}
        assert owners, f"{name} is imported but no installed distribution provides it"
        if not owners & runtime:
            missing[name] = sorted(owners)
    assert not missing, f"imported but not in [project] dependencies: {missing}"
    assert not runtime & TEST_TOOLS
    assert TEST_TOOLS <= test | {"pytest-timeout"}
    assert "prometheus-client" in runtime and "httpx2" in runtime


def test_every_runtime_dependency_is_bounded_and_pinned() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {
        _norm(line.split("==")[0]): line.split("==")[1]
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for spec in project["dependencies"]:
        name = _norm(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0])
        assert "<" in spec, f"{spec}: a runtime dependency is bounded to a major"
        assert name in pins, f"{name} is not pinned in constraints.txt"


def test_version() -> None:
    done = run_cli(["--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"batchd {__version__}"


def test_the_configuration_file_is_named_by_flag_then_variable_then_the_default(
    tmp_path: Path,
) -> None:
    named = tmp_path / "a.toml"
    assert config_path(named, {"BATCHD_CONFIG": "/x.toml"}) == named
    assert config_path(None, {"BATCHD_CONFIG": "/x.toml"}) == "/x.toml"
    assert config_path(None, {"BATCHD_CONFIG": ""}) is None  # set but empty: no file at all
    expected = DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None
    assert config_path(None, {}) == expected
    assert str(DEFAULT_CONFIG) == "/etc/batchd/batchd.toml"


def _in_private_etc(tmp_path: Path, config_text: str) -> list[str]:
    """A command prefix that runs its command with ``/etc/batchd/batchd.toml`` holding
    ``config_text``, in a mount namespace of its own (an overlay over /etc)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to give a command a private /etc")
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    (upper / "batchd").mkdir(parents=True)
    work.mkdir()
    (upper / "batchd" / "batchd.toml").write_text(config_text)
    mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{mount} && test -f /etc/batchd/batchd.toml"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"no private overlay of /etc here: {probe.stderr.strip()}")
    return ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh"]


def test_every_command_reads_the_default_configuration_file(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    prefix = _in_private_etc(tmp_path, f'root = "{root}"\nemulate = true\nsettle_s = 0.1\n')
    env = daemon_env()
    env.pop("BATCHD_CONFIG", None)
    cli = [*prefix, sys.executable, "-m", "daemon.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=90,
            check=False,
        )  # fmt: skip

    line = {"custom_id": "c1", "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    src = write_jsonl(tmp_path / "job.jsonl", [line])
    done = run("submit", str(src))
    assert done.returncode == 0, done.stderr
    assert (root / "inbox" / "job.jsonl").exists()
    done = run("run", "--once")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "outbox" / "job.results.jsonl").exists()
    done = run("status", "--json")
    assert done.returncode == 0, done.stderr
    assert "job.jsonl" in done.stdout
    assert not Path("/etc/batchd/batchd.toml").exists() or DEFAULT_CONFIG.exists()


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


@pytest.mark.timeout(300)
def test_service_install_renders_a_unit_that_systemd_accepts(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is missing")
    prefix = tmp_path / "prefix"
    env = {**os.environ, "PYTHONPATH": _site_packages()}
    env.pop("BATCHD_CONFIG", None)
    done = subprocess.run(
        [
            "make", "-C", str(REPO), "install-service", f"PREFIX={prefix}", f"PY={sys.executable}",
            "PIP_FLAGS=--no-deps --no-build-isolation --no-index",
        ],
        env=env, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    batchd = prefix / "bin" / "batchd"
    version = subprocess.run(
        [str(batchd), "--version"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert version.stdout.strip() == f"batchd {__version__}", version.stderr
    # Installed, not linked to this checkout: the code runs from PREFIX's site-packages.
    where = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import daemon; print(daemon.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(prefix)), where.stdout + where.stderr
    assert (prefix / "share" / "batchd" / "batchd.toml.example").exists()
    unit = (prefix / "share" / "batchd" / "batchd.service").read_text()
    assert "/opt/batchd" not in unit
    assert f"ExecStart={batchd} run --config /etc/batchd/batchd.toml" in unit
    for line in ("Type=notify", "WatchdogSec=", "ExecReload=", "UMask=0027"):
        assert line in unit
    assert "-m 2770 /var/lib/batchd/inbox" in unit
    # As README says: the rendered unit copied to the system's unit folder (here a stand-in).
    installed = tmp_path / "etc" / "systemd" / "system" / "batchd.service"
    installed.parent.mkdir(parents=True)
    shutil.copy(prefix / "share" / "batchd" / "batchd.service", installed)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing: the unit was rendered but not verified")
    verify = subprocess.run(
        [analyze, "verify", str(installed)], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # The check can fail: the shipped unit as it is names /opt/batchd, which is not there.
    if not Path("/opt/batchd/bin/batchd").exists():
        raw = tmp_path / "raw" / "batchd.service"
        raw.parent.mkdir()
        shutil.copy(REPO / "systemd" / "batchd.service", raw)
        bad = subprocess.run([analyze, "verify", str(raw)], capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
        assert bad.returncode != 0 and "/opt/batchd/bin/batchd" in bad.stderr
