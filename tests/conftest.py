"""Shared fixtures: an in-process emulator on loopback and SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.emulator import Emulator

from .daemon_harness import reap_daemons

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SPECS = SHARED / "specs"

TEST_KEY = "test-key-not-secret"


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[Emulator]:
    """An emulator at time scale 0 (a batch ends as soon as it is polled)."""
    async with Emulator(time_scale=0, state_dir=tmp_path / "emu") as emu:
        yield emu


@pytest.fixture
def openai_client(emulator: Emulator):
    import openai

    return openai.AsyncOpenAI(base_url=emulator.url + "/v1", api_key=TEST_KEY, max_retries=0)


@pytest.fixture
def anthropic_client(emulator: Emulator):
    import anthropic

    return anthropic.AsyncAnthropic(base_url=emulator.url, api_key=TEST_KEY, max_retries=0)


@pytest.fixture
def genai_client(emulator: Emulator):
    from google import genai

    return genai.Client(api_key=TEST_KEY, http_options={"base_url": emulator.url})


@pytest.fixture(autouse=True)
async def _reap() -> AsyncIterator[None]:
    """No daemon started by a test outlives it, even one that failed before stopping it."""
    yield
    await reap_daemons()
