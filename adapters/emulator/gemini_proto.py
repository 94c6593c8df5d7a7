"""Gemini request parsing as Google's front end does it: proto3 JSON into known messages.

Google's front end parses every JSON body into a protocol buffer before any handler sees it, so
an unknown field name or a value of the wrong type anywhere in a request is refused with
"Invalid JSON payload received ...", and camelCase and snake_case names are both accepted. This
module reproduces that parser for the messages a batch carries (``MESSAGES``); pure functions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

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
_INT_RE = re.compile(r"-?\d+")
# proto3 JSON integer ranges: an int32 field holds no more than this (10**20 is refused).
_INT32 = (-(2**31), 2**31 - 1)

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
            number = int(value)
        elif isinstance(value, str) and _INT_RE.fullmatch(value):
            number = int(value)
        else:
            return False, value
        return _INT32[0] <= number <= _INT32[1], number
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

