"""docs/operations.md's error guide names every error kind the code can record or log, and every
exit code of ``batchd run``, so the guide cannot drift from the code.

The kinds are collected by reading the source (daemon/ and the adapter clients, not the
emulator): the first argument of ``error_of(...)`` and ``ItemError(...)``, an error object's
``"type"`` (``{"type": KIND, "message": ...}``), ``error_kind=`` on log lines, the kinds
``missing_update`` picks, :data:`daemon.logs.CALL_ERROR_KINDS`, and the f-string families
(``batch_{status.state}`` for each batch state that ends a batch badly, ``http_{status}``,
``code_{code}``). A name constant (``JOB_CANCELED``) is resolved within its module.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from adapters.base import BatchState
from daemon import cli
from daemon.logs import CALL_ERROR_KINDS

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "operations.md"

_KIND = (
    r'(?:"(?P<lit>[a-z][a-z0-9_]*)"'  # a literal: "batch_refused"
    r"|(?P<name>[A-Z][A-Z0-9_]*)\b"  # a constant: INTERNAL_ERROR
    r'|f"(?P<fam>[a-z]+)_\{(?P<expr>[^}]+)\}")'  # a family: f"batch_{status.state}"
)
PATTERNS = [
    re.compile(r"\berror_of\(\s*" + _KIND),
    re.compile(r"\bItemError\(\s*" + _KIND),
    re.compile(r"\berror_kind=" + _KIND),
    re.compile(r'"type":\s*' + _KIND + r',\s*"message"'),
    re.compile(r"\bkind(?:,\s*\w+)?\s*=\s*" + _KIND),
    # A family built inside an adapter's item error: ``ItemError(str(... or f"http_{status}")``
    re.compile(r'\bItemError\([\s\S]{0,80}?(?P<lit>)(?P<name>)f"(?P<fam>[a-z]+)_\{(?P<expr>[^}]+)\}"'),
]
CONSTANT = re.compile(r'^([A-Z][A-Z0-9_]*)\s*(?::[^=]+)?=\s*"([a-z][a-z0-9_]*)"', re.M)
# Batch states that end a batch badly (``batch_lost_error``): the others are not errors.
BAD_BATCH_STATES = sorted(set(get_args(BatchState)) - {"running", "ended"})


def _sources() -> list[Path]:
    daemon = sorted((REPO / "daemon").rglob("*.py"))
    adapters = sorted(p for p in (REPO / "adapters").glob("*.py"))
    return daemon + adapters


def collect_kinds() -> dict[str, str]:
    """Every error kind found in the source -> where (for the failure message)."""
    found: dict[str, str] = {}
    texts = {path: path.read_text(encoding="utf-8") for path in _sources()}
    constants = {k: v for text in texts.values() for k, v in CONSTANT.findall(text)}
    for path, text in texts.items():
        where = str(path.relative_to(REPO))
        for pattern in PATTERNS:
            for m in pattern.finditer(text):
                if m["lit"]:
                    found.setdefault(m["lit"], where)
                elif m["name"] and m["name"] in constants:
                    found.setdefault(constants[m["name"]], where)
                elif m["fam"] and m["expr"].endswith("state"):
                    for state in BAD_BATCH_STATES:
                        found.setdefault(f"{m['fam']}_{state}", where)
                elif m["fam"]:
                    found.setdefault(f"{m['fam']}_<", where)  # a family: `http_<status>`
    for kind in CALL_ERROR_KINDS.values():
        found.setdefault(kind, "daemon/logs.py CALL_ERROR_KINDS")
    return found


def _guide_section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    assert "## Error guide" in text
    return text.split("## Error guide", 1)[1]


def test_the_source_scan_finds_the_known_kinds() -> None:
    """The scan itself works: it finds kinds of every origin (so an empty scan cannot pass)."""
    kinds = collect_kinds()
    for known in (
        "invalid_request",  # ingest: an error object
        "batch_refused",  # outcomes: error_of
        "internal_error",  # a constant
        "create_outcome_unknown",
        "batch_failed",  # the f-string family over batch states
        "batch_expired",  # missing_update's kind
        "result_missing",
        "malformed_result",  # an adapter's ItemError
        "http_<",
        "auth_failed",  # a log line's error_kind
        "late_bytes",
    ):
        assert known in kinds, f"the scan did not find {known}"


def test_the_error_guide_lists_every_error_kind() -> None:
    guide = _guide_section()
    missing = {
        kind: where
        for kind, where in collect_kinds().items()
        if not re.search(r"^\| `" + re.escape(kind), guide, re.M)
    }
    assert not missing, (
        "error kinds with no row in docs/operations.md's error guide (a table row starting "
        f"with the kind in backticks): {missing}"
    )


def test_the_error_guide_lists_every_exit_code() -> None:
    guide = _guide_section()
    codes = set(re.findall(r"\b(\d+) \(", cli._cmd_run.__doc__ or ""))
    for path in _sources():
        codes |= set(re.findall(r"^EXIT_\w+\s*=\s*(\d+)", path.read_text(encoding="utf-8"), re.M))
    assert {"0", "1", "2", "3"} <= codes
    missing = sorted(c for c in codes if not re.search(rf"^\| `{c}` \|", guide, re.M))
    assert not missing, f"exit codes with no row in the error guide: {missing}"
