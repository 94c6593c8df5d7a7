"""The commands a user types, as real subprocesses: one configuration check for all of them,
``batchd status`` read-only, ``batchd submit``'s rules, and output into a closed pipe.

* ``run``, ``check``, ``status``, ``submit`` and ``models`` load and check the configuration
  the same way: a typo is exit 2 with the same message from each, never a traceback.
* ``status`` opens the database read-only: a user who may read but not write the state folder
  gets the report (it used to hang), and the database file is left untouched.
* ``submit`` refuses what the daemon would ignore (exit 2, nothing copied), needs an inbox to
  be named, and never overwrites a submission (two in the same second keep both).
* No command prints a traceback when its reader goes away (``batchd status | head -1``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.emulator import Emulator
from daemon.cli import main

from .daemon_harness import (
    REPO,
    daemon_env,
    permissions_enforceable,
    run_cli,
    run_once,
    start_daemon,
    stop,
    unified,
    wait_for_log,
    write_jsonl,
)

LINES = [unified(f"c{i}", "gpt-4o-mini", f"cli {i}") for i in range(3)]
needs_modes = pytest.mark.skipif(
    not permissions_enforceable(), reason="cannot make a file unreadable here"
)


def test_every_command_refuses_a_typo_the_same_way(tmp_path: Path) -> None:
    config = tmp_path / "batchd.toml"
    config.write_text(f'root = "{tmp_path}"\n[providers.openai]\nbatchsize = 10\n')
    src = write_jsonl(tmp_path / "in.jsonl", LINES)
    commands = {
        "run": ["run", "--once"],
        "check": ["check", str(src)],
        "status": ["status"],
        "submit": ["submit", str(src)],
        "models": ["models", "gpt-4o-mini"],
    }
    expected = f"batchd: config file {config}: providers.openai.batchsize: unknown key"
    for name, args in commands.items():
        out = run_cli([*args, "--config", str(config)])
        assert out.returncode == 2, (name, out.stderr)
        assert out.stderr.startswith(expected), (name, out.stderr)
        assert "Traceback" not in out.stderr, name
    assert not (tmp_path / "inbox").exists()  # nothing happened


def _break_pipe(args: list[str]) -> tuple[int, str]:
    """``batchd ARGS | true``: the reader is gone before batchd writes (it starts in well under
    the time Python takes to import batchd). The exit status of batchd and its stderr."""
    command = f"{sys.executable} -m daemon.cli {' '.join(args)}"
    script = f'{command} | true; echo "rc=${{PIPESTATUS[0]}}"'
    out = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=daemon_env(), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    return int(out.stdout.strip().rsplit("rc=", 1)[1]), out.stderr


async def test_a_closed_pipe_ends_each_command_quietly(tmp_path: Path, emulator: Emulator):
    write_jsonl(tmp_path / "inbox" / "a.jsonl", LINES)
    assert (await run_once(tmp_path, emulator.url)).returncode == 0
    src = write_jsonl(tmp_path / "check.jsonl", [*LINES, "{broken"])
    cases = {
        ("status", "--root", str(tmp_path)): 0,
        ("status", "--root", str(tmp_path), "--json"): 0,
        ("models",): 0,
        ("models", "--markdown"): 0,
        ("check", str(src)): 1,  # its own verdict (one invalid line), not the pipe's
    }
    for args, code in cases.items():
        rc, err = _break_pipe(list(args))
        assert (rc, err) == (code, ""), (args, rc, err)
    big = tmp_path / "big.jsonl"  # more output than a pipe holds, cut by head
    write_jsonl(big, [unified(f"b{i}", "gpt-4o-mini", f"{i}") for i in range(3)] + ["[]"] * 3000)
    script = f"{sys.executable} -m daemon.cli check --max-invalid 3000 {big} | head -1"
    out = subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=daemon_env(), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert out.stdout.startswith("batchd check") and out.stderr == "", out.stderr


# -- status, read-only --------------------------------------------------------------------------


def _read_only_copy(state: Path, target: Path) -> Path:
    """A copy of the state folder that its owner may read but not write."""
    shutil.copytree(state, target)
    for path in target.iterdir():
        if path.is_file():
            os.chmod(path, 0o400)
    os.chmod(target, 0o500)
    return target


def _chmod_back(folder: Path) -> None:
    os.chmod(folder, 0o700)
    for path in folder.iterdir():
        os.chmod(path, 0o600)


@needs_modes
@pytest.mark.parametrize("when", ["stopped", "running"])
async def test_status_works_for_a_user_who_cannot_write_the_state(
    tmp_path: Path, emulator: Emulator, when: str
):
    """A copy of the state folder (taken after the daemon stopped, or while it runs: with its
    -wal and -shm files) made read-only: status reports it, promptly, and changes nothing."""
    root = tmp_path / "root"
    write_jsonl(root / "inbox" / "a.jsonl", LINES)
    if when == "stopped":
        assert (await run_once(root, emulator.url)).returncode == 0
        copy = _read_only_copy(root / "state", tmp_path / "ro")
    else:
        proc = await start_daemon(root, emulator.url, once=False)
        await wait_for_log(proc, "results written")
        copy = _read_only_copy(root / "state", tmp_path / "ro")
        assert (await stop(proc)).returncode == 0
    db = copy / "batchd.sqlite3"
    before = db.read_bytes()
    try:
        out = run_cli(["status", "--state-dir", str(copy), "--json"], enforce_permissions=True)
    finally:
        _chmod_back(copy)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["files"][0]["name"] == "a.jsonl"
    assert report["files"][0]["counts"] == {"succeeded": 3}
    assert db.read_bytes() == before


def test_status_without_a_database_or_on_a_broken_one(tmp_path: Path) -> None:
    out = run_cli(["status", "--state-dir", str(tmp_path / "none")])
    assert out.returncode == 1 and "no state database at" in out.stderr
    assert not (tmp_path / "none").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "batchd.sqlite3").write_text("not a database\n" * 50)
    out = run_cli(["status", "--state-dir", str(broken)])
    assert out.returncode == 1, out.stderr
    assert "cannot read the state database" in out.stderr and "Traceback" not in out.stderr


# -- submit ---------------------------------------------------------------------------------------


def test_submit_never_overwrites_a_submission(tmp_path: Path) -> None:
    """The name is taken in the inbox, and two more come in the same second: three files."""
    inbox = tmp_path / "inbox"
    write_jsonl(inbox / "s.jsonl", [unified("first", "gpt-4o-mini", "1")])
    sources = []
    for n in (2, 3):
        sources.append(write_jsonl(tmp_path / f"src{n}" / "s.jsonl", [unified(f"n{n}", "o3", "x")]))
    for src in sources:
        assert main(["submit", "--root", str(tmp_path), str(src)]) == 0
    kept = sorted(p.read_text() for p in inbox.iterdir())
    assert len(kept) == 3
    assert sorted([*(s.read_text() for s in sources), (inbox / "s.jsonl").read_text()]) == kept
    assert not [p for p in inbox.iterdir() if p.name.startswith(".")]  # no temp file left


def test_submit_refuses_what_the_daemon_would_ignore(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", LINES)
    (tmp_path / "notes.txt").write_text("hello\n")
    for name in (".hidden.jsonl", "x.tmp", "x.part"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(good)
    (tmp_path / "folder.jsonl").mkdir()
    cases = {
        "notes.txt": "only names ending in .jsonl",
        ".hidden.jsonl": "ignores names starting with '.'",
        "x.tmp": "ignores names ending in .tmp or .part",
        "x.part": "ignores names ending in .tmp or .part",
        "link.jsonl": "a symbolic link",
        "folder.jsonl": "a folder, not a file",
        "missing.jsonl": "no such file",
    }
    for name, reason in cases.items():
        out = run_cli(["submit", "--root", str(tmp_path / "r"), str(good), str(tmp_path / name)])
        assert out.returncode == 2, (name, out.stderr)
        assert f"{tmp_path / name}: refused: " in out.stderr and reason in out.stderr, out.stderr
        assert "nothing was submitted" in out.stderr and "Traceback" not in out.stderr
        inbox = tmp_path / "r" / "inbox"
        assert not inbox.exists() or not list(inbox.iterdir())  # not even the good one


def test_submit_needs_an_inbox_to_be_named(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", LINES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    out = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "submit", str(src)],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2 and "which inbox?" in out.stderr, out.stderr
    assert not (tmp_path / "inbox").exists()  # no silent ./inbox
    config = tmp_path / "c.toml"
    config.write_text(f'inbox = "{tmp_path / "in"}"\n')
    out = run_cli(["submit", "--config", str(config), str(src)])
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "in" / "a.jsonl").read_bytes() == src.read_bytes()


@needs_modes
def test_submit_unreadable_file_and_unwritable_inbox_are_clean_errors(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", LINES)
    secret = write_jsonl(tmp_path / "secret.jsonl", LINES)
    os.chmod(secret, 0)
    out = run_cli(["submit", "--root", str(tmp_path), str(secret)], enforce_permissions=True)
    assert out.returncode == 2 and "cannot be read: Permission denied" in out.stderr, out.stderr
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    os.chmod(inbox, stat.S_IRUSR | stat.S_IXUSR)
    try:
        out = run_cli(["submit", "--inbox", str(inbox), str(src)], enforce_permissions=True)
    finally:
        os.chmod(inbox, 0o755)
    assert out.returncode == 2, out.stderr
    assert f"the inbox {inbox} is not writable" in out.stderr and "Traceback" not in out.stderr
    assert not list(inbox.iterdir())


def test_run_with_a_folder_it_cannot_create_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "outbox").write_text("a file where the outbox should be\n")
    out = run_cli(["run", "--root", str(tmp_path), "--once", "--emulate"])
    assert out.returncode == 2, out.stderr
    assert f"batchd cannot start: cannot create the folder {tmp_path / 'outbox'}" in out.stderr
    assert "Traceback" not in out.stderr
