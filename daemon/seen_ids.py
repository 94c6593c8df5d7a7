"""A set of strings with a number each, in little memory: the custom_ids of one input file.

A dict of a million custom_ids holds a million string objects, int objects and entries, about
120 bytes an id (``bench/memory.py``: 130 MB of a 1,000,000-line file's ingest). Here the ids'
UTF-8 bytes sit end to end in one bytearray, their end offsets and numbers in two arrays of
4-byte integers (8 past 4 GiB), and an open-addressing table (linear probing over ``hash()``,
at most half full) holds each id's index: the id's length plus about 16 bytes. Lookups
compare the bytes themselves, so the answer is exact.
"""

from __future__ import annotations

from array import array

_EMPTY = -1
_WIDE = 2**32 - 1  # the largest offset or line number a 4-byte array holds


class IdTable:
    """``custom_id`` → the first line that used it."""

    __slots__ = ("_blob", "_ends", "_lines", "_mask", "_slots")

    def __init__(self, capacity: int = 1024) -> None:
        size = 1 << max(4, (capacity * 2 - 1).bit_length())
        self._slots = array("i", [_EMPTY]) * size
        self._mask = size - 1
        self._blob = bytearray()
        self._ends = array("I")  # 4 bytes each, widened to 8 past 4 GiB of ids (_widen)
        self._lines = array("I")

    def __len__(self) -> int:
        return len(self._lines)

    def _key(self, index: int) -> bytes:
        start = self._ends[index - 1] if index else 0
        return bytes(self._blob[start : self._ends[index]])

    def _find(self, data: bytes) -> tuple[int, int]:
        """(the slot of ``data``, or of the empty slot where it would go; its entry or -1)."""
        slots, mask, blob, ends = self._slots, self._mask, self._blob, self._ends
        i = hash(data) & mask
        while True:
            entry = slots[i]
            if entry == _EMPTY:
                return i, entry
            if blob[ends[entry - 1] if entry else 0 : ends[entry]] == data:
                return i, entry
            i = (i + 1) & mask

    def first(self, custom_id: str, line: int) -> int | None:
        """The line already recorded for ``custom_id``; else record ``line`` for it, None."""
        data = custom_id.encode("utf-8", "surrogatepass")
        slots, mask, blob, ends = self._slots, self._mask, self._blob, self._ends
        i = hash(data) & mask
        while (entry := slots[i]) != _EMPTY:  # (_find, inlined: this runs for every line)
            if blob[ends[entry - 1] if entry else 0 : ends[entry]] == data:
                return self._lines[entry]
            i = (i + 1) & mask
        index = len(self._lines)
        blob += data
        if len(blob) > _WIDE or line > _WIDE:
            self._widen()
        self._ends.append(len(blob))
        self._lines.append(line)
        slots[i] = index
        if 2 * (index + 1) > len(slots):
            self._grow()
        return None

    def get(self, custom_id: str) -> int | None:
        """The line recorded for ``custom_id``, or None (nothing is recorded)."""
        entry = self._find(custom_id.encode("utf-8", "surrogatepass"))[1]
        return None if entry == _EMPTY else self._lines[entry]

    def _widen(self) -> None:
        if self._ends.typecode != "Q":
            self._ends, self._lines = array("Q", self._ends), array("Q", self._lines)

    def _grow(self) -> None:
        size = len(self._slots) * 2
        self._slots = array("i", [_EMPTY]) * size
        self._mask = size - 1
        for index in range(len(self._lines)):
            i = hash(self._key(index)) & self._mask
            while self._slots[i] != _EMPTY:
                i = (i + 1) & self._mask
            self._slots[i] = index

    @classmethod
    def of(cls, ids: dict[str, int]) -> IdTable:
        """A table holding ``ids`` (id → first line)."""
        table = cls(capacity=len(ids))
        for custom_id, line in ids.items():
            table.first(custom_id, line)
        return table
