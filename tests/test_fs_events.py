"""Folder events from inotify, read by the event loop: a file appearing wakes the watcher, a
name outside the watched ones does not, and the folder going ends the watch as lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daemon import fs_events

pytestmark = pytest.mark.skipif(not fs_events.available(), reason="no inotify on this system")


async def _until(event: asyncio.Event, timeout: float = 10) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def test_events_wake_and_a_removed_folder_ends_the_watch(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    folder.mkdir()
    woke, stop = asyncio.Event(), asyncio.Event()
    events = fs_events.FolderEvents(folder, woke.set, debounce_s=0.05)
    watching = asyncio.ensure_future(events.run(stop))
    await asyncio.sleep(0.1)
    (folder / "a.jsonl").write_text("{}\n")
    assert await _until(woke)
    woke.clear()
    (folder / "a.jsonl").unlink()
    folder.rmdir()
    assert await asyncio.wait_for(watching, 10) is True  # lost, not stopped
    assert woke.is_set()


async def test_only_the_named_files_wake_and_stop_ends_it(tmp_path: Path) -> None:
    woke, stop = asyncio.Event(), asyncio.Event()
    events = fs_events.FolderEvents(tmp_path, woke.set, names={"db"}, debounce_s=0)
    watching = asyncio.ensure_future(events.run(stop))
    await asyncio.sleep(0.1)
    (tmp_path / "other").write_text("x")
    assert not await _until(woke, 0.5)
    (tmp_path / "db").write_text("x")
    assert await _until(woke)
    stop.set()
    assert await asyncio.wait_for(watching, 10) is False
