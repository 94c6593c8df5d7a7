"""Deterministic fake completions, so tests can assert on the text they get back.

The answer to a prompt is ``"[<model>] " + reply(<last user text>)``, where ``reply`` is a
fixed function of the text (an echo, prefixed ``"Answer: "``). Token counts are estimated as one
token per four characters, at least one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def answer_text(model: str, prompt: str) -> str:
    """The full (untruncated) answer the emulator gives for ``prompt``."""
    return f"[{model}] Answer: {prompt}"


@dataclass(frozen=True)
class Completion:
    text: str
    output_tokens: int
    finish: str  # "stop" | "length" | "stop_sequence"
    stop_sequence: str | None = None


def complete(
    model: str, prompt: str, *, max_tokens: int | None, stop: list[str] | None = None
) -> Completion:
    """Answer ``prompt``, cut at the first stop sequence or at ``max_tokens`` tokens."""
    text = answer_text(model, prompt)
    if stop:
        cut = [(text.find(s), s) for s in stop if s and s in text]
        if cut:
            pos, seq = min(cut)
            text = text[:pos]
            return Completion(text, estimate_tokens(text), "stop_sequence", seq)
    if max_tokens is not None and estimate_tokens(text) > max_tokens:
        text = text[: max_tokens * CHARS_PER_TOKEN]
        return Completion(text, max_tokens, "length")
    return Completion(text, estimate_tokens(text), "stop")


def short_hash(*parts: str) -> str:
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=6).hexdigest()
