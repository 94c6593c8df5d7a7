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
from adapters.jsontext import loads

from . import queries as q
from .base import StoreError

JSON_COLUMNS = ("body", "metadata", "adaptations", "batch_ids", "result", "error")


def _decode_request(row: sqlite3.Row, as_text: Iterable[str] = ()) -> dict[str, Any]:
    d = dict(row)
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
    except those named in ``as_text``. It opens its own read-only connection (WAL lets it
    read while the daemon writes), for use in a worker thread."""
    as_text = frozenset(as_text)
    db = _read_only(path)
    db.row_factory = sqlite3.Row
    for r in _file_pages(db, q.SELECT_FILE_REQUESTS_PAGE, (), file_id, chunk, "line"):
        yield _decode_request(r, as_text)


# The columns of iter_result_rows' tuples, in order.
RESULT_COLUMNS = (
    "custom_id", "line", "model", "provider", "status", "result", "answer", "error", "attempts",
    "batch_ids", "adaptations", "metadata", "body",
)  # fmt: skip


def iter_result_rows(
    path: Path, file_id: int, body_of: str, chunk: int = 2000
) -> Iterator[tuple[Any, ...]]:
    """What the outbox writer needs of a file's requests, in input order, as tuples of
    ``RESULT_COLUMNS``, every JSON column as its stored text; ``body`` only for the requests
    of provider ``body_of`` (None for the others). Its own read-only connection, as
    :func:`iter_file_rows`."""
    db = _read_only(path)
    yield from _file_pages(db, q.SELECT_FILE_RESULTS_PAGE, (body_of,), file_id, chunk, 1)


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
