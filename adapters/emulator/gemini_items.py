"""Gemini batch items: request rules, answers, implicit-cache counters and the item run.

Each item is parsed as proto3 JSON (gemini_proto), checked as the model backend checks it, and
answered deterministically. The run streams over a batch's input lines and is called in a worker
thread: file I/O and pure computation only, never the store.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models
from .answers import complete, estimate_tokens, short_hash
from .core import strict_loads
from .gemini_proto import Violation, parse_message, snake, violations_message
from .journal import FAILED, RETRYABLE, SUCCEEDED, item_digest

DATA_FIELDS = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
    "toolCall",
    "toolResponse",
)
MAX_STOP_SEQUENCES = 5
MAX_CANDIDATES = 8

# Injected item errors: HTTP-style code, canonical status, Google's wording.
ITEM_FAULTS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "overloaded": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "server": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "invalid": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
}

# -- per-item rules ----------------------------------------------------------------------------


def _field_error(path: str, text: str) -> str:
    return f"* GenerateContentRequest.{path}: {text}\n"


def check_request(request: dict[str, Any], batch_model: str) -> str | None:
    """The model backend's checks on one parsed request, in its own words; None when valid."""
    own_model = request.get("model")
    if own_model is not None and own_model.removeprefix("models/") != batch_model:
        return (
            f"Model {own_model} in the request does not match the batch model models/{batch_model}."
        )
    contents = request.get("contents") or []
    if not contents:
        return _field_error("contents", "contents is not specified")
    for i, content in enumerate(contents):
        role = content.get("role", "")
        if role and role not in models.GEMINI_ROLES:
            return "Please use a valid role: user, model."
        error = _check_parts(content, f"contents[{i}]")
        if error:
            return error
    system = request.get("systemInstruction")
    if system is not None:
        error = _check_parts(system, "system_instruction")
        if error:
            return error
    return _check_generation_config(request.get("generationConfig") or {})


def _check_parts(content: dict[str, Any], path: str) -> str | None:
    parts = content.get("parts") or []
    if not parts:
        return _field_error(f"{path}.parts", "contents.parts must not be empty.")
    for j, part in enumerate(parts):
        if not any(name in part for name in DATA_FIELDS):
            return _field_error(
                f"{path}.parts[{j}].data",
                "required oneof field 'data' must have one initialized field",
            )
    return None


def _check_generation_config(config: dict[str, Any]) -> str | None:
    prefix = "generation_config."
    ranges = {
        "temperature": models.GEMINI_TEMPERATURE_RANGE,
        "topP": models.GEMINI_TOP_P_RANGE,
    }
    for name, (low, high) in ranges.items():
        value = config.get(name)
        if value is not None and not low <= value <= high:
            return _field_error(
                prefix + snake(name), f"{snake(name)} must be in the range [{low}, {high}]."
            )
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and max_tokens < 1:
        return _field_error(prefix + "max_output_tokens", "max_output_tokens must be positive.")
    count = config.get("candidateCount")
    if count is not None and not 1 <= count <= MAX_CANDIDATES:
        return _field_error(
            prefix + "candidate_count",
            f"candidate_count must be in the range [1, {MAX_CANDIDATES}].",
        )
    stops = config.get("stopSequences") or []
    if len(stops) > MAX_STOP_SEQUENCES:
        return _field_error(
            prefix + "stop_sequences",
            f"stop_sequences must have at most {MAX_STOP_SEQUENCES} elements.",
        )
    return None


# -- answers -----------------------------------------------------------------------------------


class PrefixCache:
    """Prompt prefixes already seen, for implicit-caching counters (in memory, bounded)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def seen_before(self, key: str) -> bool:
        """Whether ``key`` was seen before; records it either way."""
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return True
            self._seen[key] = None
            if len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return False


def _texts(content: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in content.get("parts", []) if isinstance(p, dict))


def _last_user_text(contents: list[dict[str, Any]]) -> str:
    for content in reversed(contents):
        if content.get("role", "user") == "user":
            return _texts(content)
    return _texts(contents[-1]) if contents else ""


def request_tokens(request: dict[str, Any]) -> int:
    """Estimated prompt tokens of a parsed request: its system instruction and every turn."""
    system = request.get("systemInstruction")
    texts = [_texts(system) if isinstance(system, dict) else ""]
    texts.extend(_texts(c) for c in request.get("contents") or [] if isinstance(c, dict))
    return estimate_tokens("\n".join(texts))


def generate(
    model: str, request: dict[str, Any], cache: PrefixCache, response_id: str
) -> dict[str, Any]:
    """A GenerateContentResponse for a valid request (deterministic, see answers.py)."""
    contents = request.get("contents", [])
    config = request.get("generationConfig", {})
    system = _texts(request["systemInstruction"]) if "systemInstruction" in request else ""
    texts = [_texts(c) for c in contents]
    prompt_tokens = estimate_tokens("\n".join([system, *texts]))
    prefix = "\n".join([system, *texts[:-1]])
    prefix_tokens = estimate_tokens(prefix) if prefix.strip() else 0
    spec = models.gemini_model(model)
    cached = 0
    min_tokens = getattr(spec, "implicit_cache_min_tokens", 1024)
    if prefix_tokens >= min_tokens and cache.seen_before(short_hash(model, prefix)):
        cached = prefix_tokens
    answer = complete(
        model,
        _last_user_text(contents),
        max_tokens=config.get("maxOutputTokens"),
        stop=config.get("stopSequences"),
    )
    n = config.get("candidateCount", 1)
    finish = "MAX_TOKENS" if answer.finish == "length" else "STOP"
    candidates = [
        {
            "content": {"parts": [{"text": answer.text}], "role": "model"},
            "finishReason": finish,
            "index": i,
        }
        for i in range(n)
    ]
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": answer.output_tokens * n,
        "totalTokenCount": prompt_tokens + answer.output_tokens * n,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
    }
    if cached:
        usage["cachedContentTokenCount"] = cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    return {
        "candidates": candidates,
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    }


def status_error(code: int, message: str) -> dict[str, Any]:
    """A per-item error: a google.rpc.Status, which has no status-name field on the wire.

    ``code`` is the HTTP-style code (400, 429, 500, 503); whether the real service writes the
    HTTP code or the google.rpc.Code number here is unconfirmed.
    """
    return {"code": code, "message": message}


# -- the item run --------------------------------------------------------------------------------


@dataclass
class ItemJob:
    """What one run over a batch's input needs (plain data: it runs in a worker thread)."""

    input_path: Path
    output_path: Path | None  # None: results are not kept (expired/failed batches)
    model: str  # bare model id
    batch_id: str
    inline: bool
    cache: PrefixCache
    item_error: Callable[[str], str | None]
    run_limit: int | None = None  # items past this many are not run (cancelled)


@dataclass
class ItemSummary:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    outcomes: list[tuple[str, str]] = field(default_factory=list)


def iter_lines(path: Path) -> Iterator[bytes]:
    """Non-blank lines of a JSONL file, streamed."""
    with path.open("rb") as fh:
        for raw in fh:
            if raw.strip():
                yield raw


def parse_line(raw: bytes, inline: bool, model: str) -> tuple[dict[str, Any] | None, str, str]:
    """Parse one input line: (parsed line or None, its journal digest, error message)."""
    try:
        data = strict_loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        text = raw.decode("utf-8", "replace").strip()
        return None, item_digest(model, text), f"Invalid JSON payload received. {exc}."
    errors: list[Violation] = []
    parsed = parse_message(data, "InlinedRequest" if inline else "FileLine", "", errors)
    if errors:
        return None, item_digest(model, data), violations_message(errors)
    if "request" not in parsed:
        return None, item_digest(model, data), "* request: request is not specified\n"
    return parsed, item_digest(model, parsed["request"]), ""


def scan_input(path: Path, model: str, inline: bool) -> list[str]:
    """The journal digests of every item of an input file, in order."""
    return scan_input_tokens(path, model, inline, count_tokens=False)[0]


def scan_input_tokens(
    path: Path, model: str, inline: bool, count_tokens: bool = True
) -> tuple[list[str], int]:
    """The journal digests of every item of an input file, and (when ``count_tokens``) their
    estimated prompt tokens."""
    digests: list[str] = []
    tokens = 0
    for raw in iter_lines(path):
        parsed, digest, _ = parse_line(raw, inline, model)
        digests.append(digest)
        if count_tokens and parsed is not None:
            tokens += request_tokens(parsed["request"])
    return digests, tokens


def _run_one(job: ItemJob, index: int, raw: bytes) -> tuple[dict[str, Any], str, str]:
    """One item: (output line, journal digest, journal status)."""
    parsed, digest, parse_error = parse_line(raw, job.inline, job.model)
    error: str | None = parse_error
    line: dict[str, Any] = {}
    if parsed is not None:
        if not job.inline and "key" in parsed:
            line["key"] = parsed["key"]
        error = check_request(parsed["request"], job.model)
    elif not job.inline:
        key = _salvage_key(raw)
        if key is not None:
            line["key"] = key
    if error:
        line["error"] = status_error(400, error)
        status = FAILED
    else:
        assert parsed is not None
        fault = job.item_error(json.dumps(parsed["request"], separators=(",", ":")))
        if fault is not None:
            code, _, message = ITEM_FAULTS[fault]
            line["error"] = status_error(code, message)
            status = FAILED if fault == "invalid" else RETRYABLE
        else:
            response_id = short_hash(job.batch_id, str(index))
            line["response"] = generate(job.model, parsed["request"], job.cache, response_id)
            status = SUCCEEDED
    if job.inline and parsed is not None and "metadata" in parsed:
        line["metadata"] = parsed["metadata"]
    return line, digest, status


def _salvage_key(raw: bytes) -> str | None:
    """The key of a line whose request did not parse, so its error can still be matched."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    key = data.get("key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def run_items(job: ItemJob) -> ItemSummary:
    """Run every item of ``job`` in input order, writing one output line per item run."""
    summary = ItemSummary()
    out = job.output_path.open("w", encoding="utf-8") if job.output_path else None
    try:
        for index, raw in enumerate(iter_lines(job.input_path)):
            summary.total += 1
            if job.run_limit is not None and index >= job.run_limit:
                digest = parse_line(raw, job.inline, job.model)[1]
                summary.outcomes.append((digest, RETRYABLE))
                continue
            line, digest, status = _run_one(job, index, raw)
            summary.outcomes.append((digest, status))
            if status == SUCCEEDED:
                summary.succeeded += 1
            else:
                summary.failed += 1
            if out is not None:
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
    finally:
        if out is not None:
            out.close()
    return summary


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 (hex) of a file, streamed."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of an inline-output blob (bounded by the 20 MB inline input limit)."""
    return [json.loads(raw) for raw in iter_lines(path)]

