"""Text for people: names and ids made safe for one log or terminal line, and counted nouns.
What ``batchd status``, ``check`` and every log line print. Its own module, free of the
logging library, so that the commands that never log do not import it (start-up time)."""

from __future__ import annotations

import re

# Characters that must not reach a text log line as they are: C0 and C1 controls (a newline
# in a file name would forge a log line, an escape sequence would drive the terminal), DEL,
# the Unicode line and paragraph separators, and lone surrogates (not encodable).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def escape(value: object) -> str:
    """``value`` as text on one line: each unsafe character becomes its Python escape (a
    newline ``\\n``, ESC ``\\x1b``, a lone surrogate ``\\udcff``). Names and ids bound into
    log lines go through here, so no user input can add or change a line of the log."""
    text = str(value)
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 request``, ``2 requests`` (``nouns``: an irregular plural)."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"


__all__ = ["escape", "plural"]
