"""End to end: the shared inbox of README "Sharing the inbox", with real users and a real group.

The folders are made exactly as the unit's ``ExecStartPre`` lines make them (``install -d``:
inbox ``2770``, outbox ``2750``, owned by the service user and the ``batchd`` group); the daemon
runs as the service user under the unit's ``UMask=0027``; a member of the group, with a strict
umask (077) and a primary group of their own, submits a file; a user outside the group cannot.
The member reads the results; the outsider cannot; the state folder stays the service's alone.

Needs root (to make the users, removed afterwards) and a system Python of the same minor
version as the test's, which the new users can run (the developer venv's packages are put on
its path); skipped otherwise.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemon_harness import REPO, write_jsonl

TOOLS = ("useradd", "groupadd", "userdel", "groupdel", "install")


def _system_python() -> str | None:
    for candidate in (f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def users() -> Iterator[dict[str, str]]:
    """A ``batchd``-like group, its service user, a member and an outsider (removed after)."""
    if os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS):
        pytest.skip("needs root and useradd/groupadd to make real users")
    if _system_python() is None:
        pytest.skip("no system Python of this minor version that other users can run")
    tag = secrets.token_hex(3)
    names = {"group": f"bdg{tag}", "svc": f"bds{tag}", "member": f"bdm{tag}", "out": f"bdo{tag}"}
    made_users: list[str] = []
    made_groups: list[str] = []
    try:
        subprocess.run(["groupadd", names["group"]], check=True)
        made_groups.append(names["group"])
        add = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        subprocess.run([*add, "--system", "-g", names["group"], names["svc"]], check=True)
        made_users.append(names["svc"])
        subprocess.run([*add, "-U", "-G", names["group"], names["member"]], check=True)
        made_users.append(names["member"])
        made_groups.append(names["member"])
        subprocess.run([*add, "-U", names["out"]], check=True)
        made_users.append(names["out"])
        made_groups.append(names["out"])
        yield names
    finally:
        for user in made_users:
            subprocess.run(["userdel", user], check=False, capture_output=True)
        for group in made_groups:
            subprocess.run(["groupdel", group], check=False, capture_output=True)


def _as(user: str, groups: list[str], args: list[str], env: dict[str, str], umask: int,
        cwd: Path) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``args`` run as ``user`` with ``groups`` (the first is the primary group)."""
    return subprocess.run(
        args, user=user, group=groups[0], extra_groups=groups[1:], umask=umask, env=env,
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_group_members_submit_and_read_results_others_cannot(users: dict[str, str]) -> None:
    base = Path(tempfile.mkdtemp(prefix="batchd-share-", dir="/tmp"))
    try:
        _run(base, users)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(base: Path, users: dict[str, str]) -> None:
    group, svc, member, out = users["group"], users["svc"], users["member"], users["out"]
    os.chmod(base, 0o755)
    root = base / "srv"
    # As systemd's StateDirectory= (0750) and the unit's ExecStartPre lines make them.
    install = ["install", "-d", "-o", svc, "-g", group]
    subprocess.run([*install, "-m", "0750", str(root)], check=True)
    subprocess.run([*install, "-m", "2770", str(root / "inbox")], check=True)
    subprocess.run([*install, "-m", "2750", str(root / "outbox")], check=True)
    config = base / "batchd.toml"
    fast = "settle_s = 0.1\nscan_interval_s = 0.5\nbatch_linger_s = 0.1\npoll_initial_s = 0.05\n"
    config.write_text(f'root = "{root}"\nemulate = true\n{fast}')
    os.chmod(config, 0o644)
    line = {"custom_id": "c1", "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    src = write_jsonl(base / "job.jsonl", [line])
    os.chmod(src, 0o644)
    python = _system_python()
    assert python is not None
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{sysconfig.get_paths()['purelib']}:{REPO}",
        "BATCHD_CONFIG": str(config),
        "HOME": str(base),
    }
    cli = [python, "-m", "daemon.cli"]

    refused = _as(out, [out], [*cli, "submit", str(src)], env, 0o022, base)
    assert refused.returncode != 0
    assert "not writable by this user" in refused.stderr or "Permission" in refused.stderr

    done = _as(member, [member, group], [*cli, "submit", str(src)], env, 0o077, base)
    assert done.returncode == 0, done.stderr
    dropped = root / "inbox" / "job.jsonl"
    st = dropped.stat()
    assert st.st_gid == grp.getgrnam(group).gr_gid  # setgid inbox: the group's, not the member's
    assert st.st_uid == pwd.getpwnam(member).pw_uid
    assert stat.S_IMODE(st.st_mode) == 0o640  # group-readable although the umask is 077

    ran = _as(svc, [group], [*cli, "run", "--once"], env, 0o027, base)
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = root / "outbox" / "job.results.jsonl"
    assert stat.S_IMODE(results.stat().st_mode) == 0o640
    assert results.stat().st_gid == grp.getgrnam(group).gr_gid
    read = _as(member, [member, group], ["cat", str(results)], env, 0o077, base)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout.splitlines()[0])["status"] == "succeeded"
    denied = _as(out, [out], ["cat", str(results)], env, 0o022, base)
    assert denied.returncode != 0
    state = root / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert state.stat().st_uid == pwd.getpwnam(svc).pw_uid
    status = _as(member, [member, group], [*cli, "status"], env, 0o077, base)
    assert status.returncode != 0  # the state is the service's alone: status needs its user
