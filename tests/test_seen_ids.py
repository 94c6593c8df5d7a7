"""daemon.seen_ids.IdTable: the custom_ids of a file in little memory, exactly as a dict would."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.seen_ids import IdTable
from daemon.validate import _SeenIds

IDS = st.text(st.characters(codec="utf-8") | st.sampled_from("\ud800\udfffé"), max_size=12)


@settings(max_examples=300)
@given(st.lists(IDS, max_size=400))
def test_it_answers_as_a_dict_of_first_lines(ids: list[str]) -> None:
    table, model = IdTable(capacity=1), {}
    for line, custom_id in enumerate(ids, 1):
        assert table.get(custom_id) == model.get(custom_id)
        assert table.first(custom_id, line) == model.get(custom_id)
        model.setdefault(custom_id, line)
    assert len(table) == len(model)
    for custom_id, line in model.items():
        assert table.get(custom_id) == line


def test_ids_take_their_bytes_and_about_16_more() -> None:
    table = IdTable.of({f"req-{n:08d}": n + 1 for n in range(100_000)})
    assert table.first("req-00000007", 5) == 8 and table.get("req-00099999") == 100_000
    size = len(table._blob) + sum(a.itemsize * len(a) for a in (table._ends, table._lines))
    size += table._slots.itemsize * len(table._slots)
    assert size < 100_000 * (12 + 4 + 4 + 2 * 4 * 2)  # a dict of the same: ~120 bytes an id


def test_validator_moves_to_the_table_past_its_dict_size(monkeypatch: Any) -> None:
    monkeypatch.setattr(_SeenIds, "DICT_IDS", 3)
    seen = _SeenIds()
    answers = [seen.first_line(f"id{n}", n, defaulted=False) for n in range(1, 6)]
    assert answers == [None] * 5 and isinstance(seen._explicit, IdTable)
    assert seen.first_line("id2", 6, defaulted=False) == 2
    assert seen.first_line("line-7", 7, defaulted=True) is None  # a default id: not stored
    assert seen.first_line("line-7", 8, defaulted=False) == 7
    assert seen.first_line("line-9", 9, defaulted=False) is None  # explicit, free
    assert seen.first_line("line-9", 10, defaulted=True) == 9


def test_offsets_and_lines_past_four_bytes_widen_the_arrays() -> None:
    table = IdTable()
    assert table.first("a", 7) is None and table.first("b", 2**40) is None
    assert table.get("a") == 7 and table.get("b") == 2**40 and table.first("b", 3) == 2**40
