"""An in-memory provider for the scheduler's unit tests (``test_scheduler.py``,
``test_containment.py``): it keeps batches in dicts, records what the scheduler asked, and
answers as the test sets it up. End-to-end tests use the emulator over HTTP instead.

What it answers:

* ``submit`` creates ``pb-<tag>`` holding the items' keys; ``find`` finds a batch created here
  (or, with ``find_any``, any tag: a create this process never saw).
* ``poll``: a batch ``ends`` (completed, every item answered) or stays running; one in
  ``invisible`` is gone (this account cannot see it).
* ``list_batches``: one page of ``listing`` when it holds anything, else no page (every due
  batch is then polled on its own).
* ``results``: one success per item of the batch.

Scripted failures: each ``*_errors`` list holds exceptions raised by the next calls of that kind
(one per call, in order; a kind in ``forever`` repeats its last one for ever), and
``lose_create_answer`` makes the next creates take effect, then raise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable

from adapters.base import (
    BatchItem,
    BatchStatus,
    ItemResult,
    ProviderLimits,
    ProviderName,
    Submitted,
)


class FakeAdapter:
    name: ProviderName = "openai"
    limits = ProviderLimits(max_items=1000, max_bytes=10**9)

    def __init__(
        self, *, ends: bool = True, find_any: bool = False, invisible: Collection[str] = ()
    ) -> None:
        self.ends = ends
        self.find_any = find_any
        self.invisible = set(invisible)  # provider batch ids this account cannot see
        self.listing: list[BatchStatus] = []  # what the account's list shows (one page)
        self.submit_errors: list[BaseException] = []
        self.poll_errors: list[BaseException] = []
        self.results_errors: list[BaseException] = []
        self.forever: set[str] = set()  # kinds whose last error repeats for ever
        self.lose_create_answer = 0
        self.created: dict[str, list[str]] = {}  # provider batch id -> item keys
        self.submitted: list[str] = []  # the tag of each create call that took effect
        self.creates: list[str] = []  # the model of each create call that took effect
        self.looked_up: list[str] = []  # the tags ``find`` was asked for
        self.polled: list[str] = []  # the provider batch ids ``poll`` was asked for
        self.lists = 0  # list calls
        self.calls: dict[str, int] = {"submit": 0, "find": 0, "poll": 0, "results": 0}

    def _raise(self, kind: str, errors: list[BaseException]) -> None:
        self.calls[kind] += 1
        if errors:
            err = errors[0] if kind in self.forever and len(errors) == 1 else errors.pop(0)
            raise err

    async def submit(self, tag: str, model: str, items: Iterable[BatchItem]) -> Submitted:
        self._raise("submit", self.submit_errors)
        self.created[f"pb-{tag}"] = [i.key for i in items]
        self.submitted.append(tag)
        self.creates.append(model)
        if self.lose_create_answer:
            self.lose_create_answer -= 1
            raise RuntimeError("the answer's parsing has a bug")
        return Submitted(f"pb-{tag}")

    async def find(
        self,
        tag: str,
        model: str,
        n_items: int,
        since: float,
        exclude: Collection[str],
        keys: Collection[str] = (),
    ) -> str | None:
        self.calls["find"] += 1
        self.looked_up.append(tag)
        return f"pb-{tag}" if self.find_any or f"pb-{tag}" in self.created else None

    async def poll(self, provider_batch_id: str) -> BatchStatus:
        self._raise("poll", self.poll_errors)
        self.polled.append(provider_batch_id)
        if provider_batch_id in self.invisible:
            return BatchStatus(provider_batch_id, "gone", "not_found", error="batch not found")
        if not self.ends:
            return BatchStatus(provider_batch_id, "running", "in_progress", total=1, done=0)
        n = len(self.created[provider_batch_id])
        return BatchStatus(provider_batch_id, "ended", "completed", total=n, done=n)

    async def list_batches(self) -> AsyncIterator[list[BatchStatus]]:
        self.lists += 1
        if self.listing:
            yield list(self.listing)

    async def results(self, provider_batch_id: str) -> AsyncIterator[ItemResult]:
        self._raise("results", self.results_errors)
        for key in self.created[provider_batch_id]:
            yield ItemResult(key, "succeeded", text=f"answer {key}")

    async def cancel(self, provider_batch_id: str) -> None: ...

    async def cleanup(self, provider_batch_id: str, input_file_id: str | None) -> None: ...

    async def close(self) -> None: ...
