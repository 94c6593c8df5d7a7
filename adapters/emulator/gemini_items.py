"""Gemini batch items: proto3-JSON parsing, request rules, answers and the item run.

Google's front end parses every JSON body into a protocol buffer before any handler sees it, so
an unknown field name or a value of the wrong type anywhere in a request is refused with
"Invalid JSON payload received ...", and camelCase and snake_case names are both accepted. This
module reproduces that parser for the messages a batch carries (``MESSAGES``), the semantic
checks the model backend applies to each item afterwards, the deterministic answer, and the
streaming run over a batch's input lines (called in a worker thread: file I/O and pure
computation only, never the store).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models
from .answers import complete, estimate_tokens, short_hash
from .journal import FAILED, RETRYABLE, SUCCEEDED, item_digest

TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1beta."

# Message name -> {camelCase field name: type}. Types: "string", "int", "number", "bool",
# "map" (string -> string), "any" (not checked inside), or a message name; a leading "[" makes
# the field repeated. Built from the v1beta discovery document plus the fields the google-genai
# SDK emits in Developer API mode.
MESSAGES: dict[str, dict[str, str]] = {
    "BatchGenerateContentRequest": {"batch": "GenerateContentBatch"},
    "GenerateContentBatch": {
        "name": "string",
        "model": "string",
        "displayName": "string",
        "inputConfig": "InputConfig",
        "priority": "int",
        "webhookConfig": "any",
        "output": "any",
        "createTime": "string",
        "updateTime": "string",
        "endTime": "string",
        "batchStats": "any",
        "state": "string",
    },
    "InputConfig": {"fileName": "string", "requests": "InlinedRequests"},
    "InlinedRequests": {"requests": "[InlinedRequest"},
    "InlinedRequest": {"request": "GenerateContentRequest", "metadata": "any"},
    "FileLine": {"key": "string", "request": "GenerateContentRequest"},
    "CreateFileRequest": {"file": "File"},
    "File": {
        "name": "string",
        "displayName": "string",
        "mimeType": "string",
        "sizeBytes": "int",
        "createTime": "string",
        "updateTime": "string",
        "expirationTime": "string",
        "sha256Hash": "string",
        "uri": "string",
        "downloadUri": "string",
        "state": "string",
        "source": "string",
        "error": "any",
        "videoMetadata": "any",
    },
    "GenerateContentRequest": {
        "model": "string",
        "contents": "[Content",
        "systemInstruction": "Content",
        "generationConfig": "GenerationConfig",
        "safetySettings": "[SafetySetting",
        "tools": "[any",
        "toolConfig": "any",
        "cachedContent": "string",
        "serviceTier": "string",
        "store": "bool",
        "labels": "map",
    },
    "Content": {"parts": "[Part", "role": "string"},
    "Part": {
        "text": "string",
        "inlineData": "Blob",
        "fileData": "FileData",
        "functionCall": "any",
        "functionResponse": "any",
        "executableCode": "any",
        "codeExecutionResult": "any",
        "toolCall": "any",
        "toolResponse": "any",
        "thought": "bool",
        "thoughtSignature": "string",
        "videoMetadata": "any",
        "mediaResolution": "any",
        "partMetadata": "any",
        "mediaProcessing": "any",
    },
    "Blob": {"mimeType": "string", "data": "string"},
    "FileData": {"mimeType": "string", "fileUri": "string"},
    "SafetySetting": {"category": "string", "threshold": "string"},
    "GenerationConfig": {
        "temperature": "number",
        "topP": "number",
        "topK": "int",
        "candidateCount": "int",
        "maxOutputTokens": "int",
        "stopSequences": "[string",
        "presencePenalty": "number",
        "frequencyPenalty": "number",
        "seed": "int",
        "responseLogprobs": "bool",
        "logprobs": "int",
        "responseMimeType": "string",
        "responseSchema": "any",
        "responseJsonSchema": "any",
        "responseModalities": "[string",
        "responseFormat": "any",
        "mediaResolution": "string",
        "speechConfig": "any",
        "thinkingConfig": "ThinkingConfig",
        "imageConfig": "any",
        "enableEnhancedCivicAnswers": "bool",
        "enableAffectiveDialog": "bool",
        "audioTranscriptionConfig": "any",
        "translationConfig": "any",
    },
    "ThinkingConfig": {
        "includeThoughts": "bool",
        "thinkingBudget": "int",
        "thinkingLevel": "string",
    },
}
PROTO_TYPES = {
    "string": "TYPE_STRING",
    "int": "TYPE_INT32",
    "number": "TYPE_FLOAT",
    "bool": "TYPE_BOOL",
}
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
_INT_RE = re.compile(r"-?\d+")

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


# -- proto3 JSON parsing ---------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One parse error: the field path (proto names) and Google's message for it."""

    field: str
    message: str


def camel(name: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _invalid_value(path: str, type_name: str, value: Any) -> Violation:
    shown = json.dumps(value, separators=(",", ":"))
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return Violation(path, f"Invalid value at '{path}' ({type_name}), {shown}")


def _type_name(spec: str) -> str:
    return PROTO_TYPES.get(spec, TYPE_PREFIX + spec)


def parse_message(value: Any, message: str, path: str, errors: list[Violation]) -> dict[str, Any]:
    """Parse ``value`` as proto3 JSON of ``message``; return it with camelCase field names."""
    if not isinstance(value, dict):
        errors.append(_invalid_value(path, _type_name(message), value))
        return {}
    fields = MESSAGES[message]
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = camel(key)
        spec = fields.get(name)
        if spec is None:
            at = f" at '{path}'" if path else ""
            errors.append(
                Violation(
                    _join(path, key),
                    f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.',
                )
            )
            continue
        if item is None:
            continue  # null is the default value in proto3 JSON
        out[name] = _parse_field(item, spec, _join(path, snake(name)), errors)
    return out


def _parse_field(value: Any, spec: str, path: str, errors: list[Violation]) -> Any:
    if not spec.startswith("["):
        return _parse_single(value, spec, path, errors)
    if not isinstance(value, list):
        errors.append(_invalid_value(path, _type_name(spec[1:]), value))
        return []
    return [_parse_single(v, spec[1:], f"{path}[{i}]", errors) for i, v in enumerate(value)]


def _parse_single(value: Any, spec: str, path: str, errors: list[Violation]) -> Any:
    if spec in MESSAGES:
        return parse_message(value, spec, path, errors)
    ok, parsed = _parse_scalar(value, spec)
    if not ok:
        errors.append(_invalid_value(path, _type_name(spec), value))
    return parsed


def _parse_scalar(value: Any, spec: str) -> tuple[bool, Any]:
    """Proto3 JSON scalars: numbers may come as strings, booleans and strings may not."""
    if spec == "any":
        return True, value
    if spec == "string":
        return isinstance(value, str), value
    if spec == "bool":
        return isinstance(value, bool), value
    if spec == "map":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return ok, value
    if isinstance(value, bool):
        return False, value
    if spec == "int":
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return True, int(value)
        if isinstance(value, str) and _INT_RE.fullmatch(value):
            return True, int(value)
        return False, value
    if isinstance(value, int | float):
        return True, float(value)
    if isinstance(value, str):
        try:
            return True, float(value)
        except ValueError:
            return False, value
    return False, value


def violations_message(errors: list[Violation]) -> str:
    return "\n".join(e.message for e in errors)


def bad_request_details(errors: list[Violation]) -> list[dict[str, Any]]:
    """The ``google.rpc.BadRequest`` detail Google attaches to a parse error."""
    return [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": e.field, "description": e.message} for e in errors],
        }
    ]


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
        data = json.loads(raw)
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
    return [parse_line(raw, inline, model)[1] for raw in iter_lines(path)]


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
