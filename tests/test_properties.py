"""Property-based tests (hypothesis) of what a user can throw at ingest and the outbox.

* Any bytes as a line become a ``Request`` or an ``Invalid``, never an exception (reading,
  validation and adaptation), and what they become can be stored and written (valid UTF-8 JSON).
* Any file name the filesystem allows gets results under names that fit NAME_MAX.
* Outbox naming never overwrites a file that is already there.

The short profile is hypothesis's default (100 examples each, part of ``make test``). The long
one: ``HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_properties.py``, or
``.venv/bin/python bench/properties.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import chunks, names
from daemon.adapt import Policy
from daemon.outbox import archive_input, reserve_names, write_outputs
from daemon.reading import iter_lines, read_line
from daemon.validate import Invalid, Request, Validator

settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

NAME_MAX = 255
MODELS = ["gpt-4o-mini", "o3-mini", "claude-haiku-4-5", "gemini-2.5-flash", "nobody-knows"]

# Text of any code point, lone surrogates included (they reach the daemon as \\udXXX escapes).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "developer", "tool"])},
    optional={"content": any_text | json_value},
)
# Requests near the valid ones, so validation and adaptation run their whole course.
unified = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS) | any_text, "messages": st.lists(message, max_size=3)},
    optional={
        "custom_id": any_text | json_value,
        "temperature": json_value,
        "top_p": st.floats(),
        "max_tokens": st.integers() | json_value,
        "stop": json_value,
        "system": any_text,
        "reasoning_effort": st.sampled_from(["low", "high", "max", "none"]) | any_text,
        "metadata": json_value,
        "provider": st.sampled_from(["openai", "anthropic", "gemini"]) | any_text,
    },
)
native = st.fixed_dictionaries(
    {"custom_id": any_text, "params": st.fixed_dictionaries({"model": st.sampled_from(MODELS)})}
) | st.fixed_dictionaries({"method": st.just("POST"), "url": any_text, "body": json_value})


def _carriable(item: Request | Invalid) -> None:
    """What a line became can be stored (the rows ingest writes) and written as UTF-8 JSON."""
    assert item.line >= 1
    row = chunks.row_dict(item)
    json.dumps(row, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if isinstance(item, Invalid):
        assert item.reason.startswith(f"line {item.line}: "), item.reason


@given(st.binary(max_size=400))
def test_any_bytes_as_a_line_become_a_request_or_an_invalid(raw: bytes) -> None:
    validator = Validator(Policy())
    item = read_line(validator, 7, raw)
    assert isinstance(item, Request | Invalid)
    _carriable(item)


@given(unified | native | json_value, st.booleans())
def test_any_json_as_a_line_becomes_a_request_or_an_invalid(value: Any, ascii_only: bool) -> None:
    try:
        raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    except ValueError:
        return  # not JSON text at all (a float NaN as a key is not possible; kept for safety)
    item = read_line(Validator(Policy()), 1, raw)
    assert isinstance(item, Request | Invalid)
    _carriable(item)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_any_file_reads_one_item_per_non_blank_line(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "in.jsonl"
    data = b"\n".join(lines)
    path.write_bytes(data)
    items = list(iter_lines(path, max_request_bytes=200))
    assert all(isinstance(x, Request | Invalid) for x in items)
    numbers = [x.line for x in items]
    assert numbers == sorted(set(numbers))
    physical = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    expected = [n for n, raw in enumerate(physical, 1) if raw.strip() or len(raw) > 200]
    assert numbers == expected


# Any name the filesystem allows: bytes but "/" and NUL, not hidden, ending in ".jsonl".
name_bytes = st.binary(min_size=1, max_size=NAME_MAX - len(".jsonl")).filter(
    lambda b: b"/" not in b and b"\x00" not in b and not b.startswith(b".")
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(name_bytes, st.integers(min_value=1, max_value=10**12))
def test_any_file_name_gets_results_under_names_that_fit(
    tmp_path: Path, raw: bytes, job_id: int
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        root = Path(tmp)
        dropped = os.fsencode(root) + b"/" + raw + b".jsonl"
        with open(dropped, "wb") as f:
            f.write(b"{}\n")  # the filesystem takes the name
        name = names.display(os.fsdecode(raw + b".jsonl"))
        name.encode("utf-8")  # storable in SQLite and JSON
        outbox, processed, work = root / "outbox", root / "processed", root / "work"
        for folder in (outbox, processed, work):
            folder.mkdir()
        work_copy = work / names.work_name("0123abcd", os.fsdecode(raw + b".jsonl"))
        os.rename(dropped, work_copy)
        for _ in range(2):  # a second job of the same name takes the next pair
            targets = reserve_names(outbox, names.stem(name), job_id)
            write_outputs(outbox, names.stem(name), job_id, [], summary_meta={}, targets=targets)
            assert all(t.exists() for t in targets)
        archived = archive_input(work_copy, processed, job_id, name)
        assert archived.parent == processed and archived.name.endswith(".jsonl")
        for folder in (outbox, processed, work):
            for entry in os.listdir(os.fsencode(folder)):
                assert len(entry) <= NAME_MAX
        assert len(os.listdir(outbox)) == 4


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    st.text(min_size=1, max_size=300).filter(lambda s: "/" not in s and "\x00" not in s),
    st.integers(min_value=1, max_value=10**6),
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=8),
)
def test_outbox_naming_never_overwrites(
    tmp_path: Path, stem: str, job_id: int, taken: list[tuple[int, bool]]
) -> None:
    stem = names.display(stem)
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        outbox = Path(tmp)
        sequence = names.candidates(stem, job_id)
        pairs = [names.outbox_pair(*next(sequence)) for _ in range(7)]
        before = {}
        for k, results in taken:  # someone else's files on some of the names
            existing = outbox / pairs[k][0 if results else 1]
            existing.write_text(f"not ours {k}")
            before[existing] = existing.read_text()
        targets = reserve_names(outbox, stem, job_id)
        assert not any(t.exists() for t in targets)
        rows = [{"custom_id": "c", "line": 1, "status": "invalid"}]
        write_outputs(outbox, stem, job_id, rows, summary_meta={}, targets=targets)
        assert all(path.read_text() == text for path, text in before.items())
        assert all(len(os.fsencode(p.name)) <= NAME_MAX for p in outbox.iterdir())


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5_000), max_size=60),
    max_items=st.integers(min_value=1, max_value=8),
    max_bytes=st.integers(min_value=1, max_value=12_000),
    max_tokens=st.none() | st.integers(min_value=1, max_value=3_000),
)
def test_packer_add_is_the_fits_rule(
    sizes: list[int], max_items: int, max_bytes: int, max_tokens: int | None
) -> None:
    """``BatchPacker.add`` (written out, the claim's per-request step) splits any sequence of
    sizes where the rule spelled with ``fits``, ``item_bytes`` and ``estimate_tokens`` does,
    and counts the same tokens and batches."""
    from daemon.packing import BatchPacker, estimate_tokens, item_bytes

    packer = BatchPacker(max_items=max_items, max_bytes=max_bytes, max_tokens=max_tokens)
    items = charged = tokens = batches = 0
    for size in sizes:
        fits = (
            items > 0
            and items < max_items
            and charged + item_bytes(size) <= max_bytes
            and (max_tokens is None or tokens + estimate_tokens(size) <= max_tokens)
        )
        assert packer.fits(size) == fits
        assert packer.add(size) == (not fits)
        if not fits:
            batches += 1
            items = charged = tokens = 0
        items += 1
        charged += item_bytes(size)
        tokens += estimate_tokens(size)
        assert (packer.batches, packer.tokens) == (batches, tokens)
