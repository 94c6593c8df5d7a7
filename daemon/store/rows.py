"""The store's readers for other threads: a file's requests for the outbox writer, a claimed
batch's items for the spool writer. Each opens its own read-only connection (WAL lets it read
while the daemon writes) and reads a page at a time, never a whole file or batch in memory.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from adapters.base import BatchItem
from adapters.jsontext import compact, loads

from . import queries as q
from .base import StoreError

JSON_COLUMNS = ("body", "metadata", "adaptations", "batch_ids", "result", "error")


class BatchIdTexts:
    """A request's stored ``batch_ids`` (the batch rows it went into, in claim order: ``[7]``)
    as the outbox writes it: the provider batch ids of those batches, as compact JSON text
    (``["batch_abc"]``). A batch that has none (its create failed; or not created yet) is
    left out; one adopted later by reconcile has its id then, and is listed.

    Most rows of a file share a few lists: each list is translated once (cached by its
    text), and a batch row's provider id is read once (one query for the ids a new list
    brings), never a subquery per row.
    """

    MAX_TEXTS = 4096  # lists cached at most (then the cache starts again: memory stays flat)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.texts: dict[str, str] = {"[]": "[]"}
        self.provider_ids: dict[int, str | None] = {}

    def __call__(self, text: str) -> str:
        known = self.texts.get(text)
        if known is not None:
            return known
        if len(self.texts) >= self.MAX_TEXTS:  # in place: a reader may hold the dict
            self.texts.clear()
            self.texts["[]"] = "[]"
            self.provider_ids.clear()
        ids = loads(text)
        missing = [i for i in ids if i not in self.provider_ids]
        if missing:
            params = (json.dumps(missing),)
            found = dict(self.db.execute(q.SELECT_BATCH_PROVIDER_IDS, params).fetchall())
            for i in missing:
                self.provider_ids[i] = found.get(i)
        names = [p for i in ids if (p := self.provider_ids[i]) is not None]
        out = self.texts[text] = compact(names)
        return out


def _decode_request(
    row: sqlite3.Row, batch_ids: BatchIdTexts, as_text: Iterable[str] = ()
) -> dict[str, Any]:
    d = dict(row)
    if d.get("batch_ids") is not None:
        d["batch_ids"] = batch_ids(d["batch_ids"])
    for key in JSON_COLUMNS:
        if d.get(key) is not None and key not in as_text:
            d[key] = loads(d[key])
    return d


def _read_only(path: Path) -> sqlite3.Connection:
    # A writer that fails mid-file (outbox full) drops its generator unfinished; it is then
    # closed wherever it is collected, so the connection must allow another thread's close()
    # (it is only ever used by one thread at a time). Otherwise each failed write leaked one.
    uri = q.READ_ONLY_URI.format(path=quote(str(Path(path).absolute())))  # '#', '?', '%' in names
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def _file_pages(
    db: sqlite3.Connection, sql: str, head: tuple[Any, ...], file_id: int, chunk: int, line: Any
) -> Iterator[Any]:
    """A file's requests in input order, a page of ``chunk`` at a time (pages bound how long
    one read lasts); rows are stepped one at a time, never a whole page in memory (a page of
    big requests would be hundreds of megabytes). ``line`` is the line number's key."""
    try:
        last = -1
        while True:
            count = 0
            for r in db.execute(sql, (*head, file_id, last, chunk)):
                count += 1
                last = r[line]
                yield r
            if count < chunk:
                return
    finally:
        db.close()


def iter_file_rows(
    path: Path, file_id: int, chunk: int = 2000, *, as_text: Iterable[str] = ()
) -> Iterator[dict[str, Any]]:
    """A file's requests in input order (each with its ``answer``), JSON columns decoded
    except those named in ``as_text``; ``batch_ids`` as provider batch ids
    (:class:`BatchIdTexts`). It opens its own read-only connection (WAL lets it read while
    the daemon writes), for use in a worker thread."""
    as_text = frozenset(as_text)
    db = _read_only(path)
    db.row_factory = sqlite3.Row
    batch_ids = BatchIdTexts(db)
    for r in _file_pages(db, q.SELECT_FILE_REQUESTS_PAGE, (), file_id, chunk, "line"):
        yield _decode_request(r, batch_ids, as_text)


# The columns of iter_result_rows' tuples, in order.
RESULT_COLUMNS = (
    "custom_id", "line", "model", "provider", "status", "result", "answer", "error", "attempts",
    "batch_ids", "adaptations", "metadata", "body",
)  # fmt: skip


def iter_result_rows(
    path: Path, file_id: int, body_of: str, chunk: int = 2000
) -> Iterator[tuple[Any, ...]]:
    """What the outbox writer needs of a file's requests, in input order, as tuples of
    ``RESULT_COLUMNS``, every JSON column as its stored text (``batch_ids`` as the text of
    its provider batch ids: :class:`BatchIdTexts`); ``body`` only for the requests of
    provider ``body_of`` (None for the others). Its own read-only connection, as
    :func:`iter_file_rows`."""
    db = _read_only(path)
    batch_ids = BatchIdTexts(db)
    texts = batch_ids.texts  # most rows share a list: a lookup, not a call
    # Unpacked and packed again by name: 0.16 µs a row, where slicing the tuple took 0.4-0.6.
    for (custom_id, line, model, provider, status, result, answer, error, attempts, ids,
         adaptations, metadata, body) in _file_pages(
            db, q.SELECT_FILE_RESULTS_PAGE, (body_of,), file_id, chunk, 1):  # fmt: skip
        yield (custom_id, line, model, provider, status, result, answer, error, attempts,
               texts.get(ids) or batch_ids(ids), adaptations, metadata, body)  # fmt: skip


class StoredItem(BatchItem):
    """A claimed request read back from the store: its ``body`` is its ``body_json`` decoded
    when first read. A spool line is written around the text, so writing an OpenAI or Gemini
    input file decodes no body (Anthropic's create call and the prompt cache do read it)."""

    def __init__(self, key: str, body_json: str) -> None:
        attrs = self.__dict__  # frozen: set as the dataclass's own __init__ would, unchecked
        attrs["key"] = key
        attrs["body_json"] = body_json

    def __getattr__(self, name: str) -> Any:  # only for what the instance does not hold yet
        if name != "body" or self.body_json is None:
            raise AttributeError(name)
        body = self.__dict__["body"] = loads(self.body_json)
        return body


class StoredItems(Sequence[BatchItem]):
    """A claimed batch's items, in claim order, read from the store as they are iterated.

    Each iteration opens its own read-only connection (WAL lets it read beside the daemon's
    writes; any thread may iterate, as the spool writer does in a worker thread) and reads the
    requests a page at a time (``PAGE_ITEMS``, or fewer big ones: ``PAGE_BYTES``): memory holds
    the ids and one page, whatever the batch's size. Each item's key is ``r<request id>``, its
    ``body_json`` the stored text and its ``body`` that text decoded when first read
    (:class:`StoredItem`).
    """

    PAGE_ITEMS = 500
    PAGE_BYTES = 4 * 1024 * 1024

    def __init__(self, path: Path, ids: Sequence[int], sizes: Sequence[int] = ()) -> None:
        self.path = path
        self.ids = ids
        self.sizes = sizes  # each request's size_bytes, when known: pages by bytes too

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(StoredItems(self.path, self.ids[index], self.sizes[index]))
        return next(iter(StoredItems(self.path, [self.ids[index]])))

    def _pages(self) -> Iterator[Sequence[int]]:
        start = 0
        while start < len(self.ids):
            end, weight = start, 0
            while end < len(self.ids) and end - start < self.PAGE_ITEMS:
                weight += self.sizes[end] if self.sizes else 0
                if weight > self.PAGE_BYTES and end > start:
                    break
                end += 1
            yield self.ids[start:end]
            start = end

    def __iter__(self) -> Iterator[BatchItem]:
        uri = q.READ_ONLY_URI.format(path=quote(str(Path(self.path).absolute())))
        db = sqlite3.connect(uri, uri=True, check_same_thread=False)  # closed wherever it ends
        try:
            for ids in self._pages():
                bodies = dict(db.execute(q.SELECT_BODIES, (json.dumps(list(ids)),)).fetchall())
                for rid in ids:
                    text = bodies.pop(rid, None)
                    if text is None:
                        raise StoreError(f"request {rid} of a claimed batch has no body")
                    yield StoredItem(f"r{rid}", text)
        finally:
            db.close()
