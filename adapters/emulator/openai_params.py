"""OpenAI request parameters for the emulator: checks of create and upload calls, in the
real API's own words, and the OpenAI error type they raise."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .core import ApiError, read_json
from .openai_errors import ItemError, invalid_type, invalid_value, missing, out_of_range

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_JSON_BODY = 1024**2
EXPIRY_RANGE = (3600, 2_592_000)
ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
CREATE_PARAMS = ("input_file_id", "endpoint", "completion_window", "metadata")
DAY = 86_400


class OpenAIError(ApiError):
    """An error answer in OpenAI's own terms (``type`` and ``code`` are separate fields)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(status, code or type, message, param=param)
        self.type = type
        self.openai_code = code

    @classmethod
    def of(cls, err: ItemError) -> OpenAIError:
        return cls(err.status, err.message, type=err.type, param=err.param, code=err.code)


def translate(err: ApiError) -> tuple[str, str | None, str]:
    """(type, code, message) in OpenAI's words for an error raised by the shared core."""
    if err.status == 401:
        if "No API key" in err.message:
            return (
                "invalid_request_error",
                None,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        return (
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
        )
    if err.status == 429:
        return (
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests. Please try again later. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
        )
    if err.status == 503:
        return "server_error", None, "The server is overloaded or not ready yet."
    if err.status >= 500:
        return (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        )
    return "invalid_request_error", None, err.message


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await read_json(request, MAX_JSON_BODY)
    except ApiError as err:
        if err.status != 400:
            raise
        raise OpenAIError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        ) from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise OpenAIError.of(invalid_type("body", "an object", body))
    return body


def bad_value(param: str, value: Any, allowed: tuple[str, ...]) -> tuple[int, str]:
    return 400, invalid_value(param, value, allowed).message


def int_query(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise OpenAIError.of(invalid_type(name, "an integer", raw)) from None
    if value < low or value > high:
        bound = low if value < low else high
        raise OpenAIError.of(out_of_range(name, value, bound, above=value > high, integer=True))
    return value


def check_create(body: dict[str, Any]) -> dict[str, Any]:
    """The batches.create parameters, checked in the API's order and words."""
    for key in body:
        if key not in (*CREATE_PARAMS, "output_expires_after"):
            raise OpenAIError(400, f"Unrecognized request argument supplied: {key}")
    for key in ("input_file_id", "endpoint", "completion_window"):
        if body.get(key) is None:
            raise OpenAIError.of(missing(key))
        if not isinstance(body[key], str):
            raise OpenAIError.of(invalid_type(key, "a string", body[key]))
    if body["endpoint"] not in ENDPOINTS:
        raise OpenAIError.of(invalid_value("endpoint", body["endpoint"], ENDPOINTS))
    if body["completion_window"] != "24h":
        raise OpenAIError.of(invalid_value("completion_window", body["completion_window"], ["24h"]))
    params = {k: body[k] for k in CREATE_PARAMS if body.get(k) is not None}
    if "metadata" in params:
        _check_metadata(params["metadata"])
    expiry = body.get("output_expires_after")
    if expiry is not None:
        params["output_ttl"] = _check_expiry("output_expires_after", expiry)
    return params


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise OpenAIError.of(invalid_type("metadata", "an object", metadata))
    if len(metadata) > 16:
        raise OpenAIError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise _too_long("metadata", 64, len(key))
        if not isinstance(value, str):
            raise OpenAIError.of(invalid_type(f"metadata.{key}", "a string", value))
        if len(value) > 512:
            raise _too_long(f"metadata.{key}", 512, len(value))


def _too_long(param: str, limit: int, got: int) -> OpenAIError:
    return OpenAIError(
        400,
        f"Invalid '{param}': string too long. Expected a string with maximum length {limit}, "
        f"but got a string with length {got} instead.",
        param=param,
        code="string_above_max_length",
    )


def _check_expiry(param: str, expiry: Any) -> int:
    """An ``expires_after`` policy: anchor created_at, 1 hour to 30 days; its seconds."""
    if not isinstance(expiry, dict):
        raise OpenAIError.of(invalid_type(param, "an object", expiry))
    anchor, seconds = expiry.get("anchor"), expiry.get("seconds")
    if anchor is None:
        raise OpenAIError.of(missing(f"{param}.anchor"))
    if anchor != "created_at":
        raise OpenAIError.of(invalid_value(f"{param}.anchor", anchor, ["created_at"]))
    if seconds is None:
        raise OpenAIError.of(missing(f"{param}.seconds"))
    if isinstance(seconds, str) and seconds.strip().lstrip("-").isdigit():
        seconds = int(seconds)  # multipart form fields arrive as text
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise OpenAIError.of(invalid_type(f"{param}.seconds", "an integer", seconds))
    low, high = EXPIRY_RANGE
    if not low <= seconds <= high:
        bound = low if seconds < low else high
        err = out_of_range(f"{param}.seconds", seconds, bound, above=seconds > high, integer=True)
        raise OpenAIError.of(err)
    return seconds


def check_upload(
    fields: dict[str, str], upload: tuple[str, str, int] | None
) -> tuple[str, int | None]:
    """The purpose and expiry (seconds) of an upload, checked as the Files API does."""
    purpose = fields.get("purpose")
    if purpose is None:
        raise OpenAIError.of(missing("purpose"))
    if purpose not in UPLOAD_PURPOSES:
        raise OpenAIError(
            400, f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'", param="purpose"
        )
    if upload is None:
        raise OpenAIError.of(missing("file"))
    if purpose == "batch" and not upload[1].lower().endswith(".jsonl"):
        raise OpenAIError(400, "Invalid file format for Batch API. Must be .jsonl")
    expiry = None
    if "expires_after[anchor]" in fields or "expires_after[seconds]" in fields:
        policy = {
            "anchor": fields.get("expires_after[anchor]"),
            "seconds": fields.get("expires_after[seconds]"),
        }
        expiry = _check_expiry("expires_after", policy)
    return purpose, expiry
