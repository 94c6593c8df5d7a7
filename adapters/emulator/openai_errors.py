"""OpenAI error answers in the real API's own words: the error object and its wording helpers.

The daemon's error classification is only tested if the emulator speaks the same words, so every
message here copies a message the real API gives (see docs/emulator-openai.md). Pure functions;
the request checks (openai_chat), the input-file validation (openai_input) and the create/upload
parameter checks (openai_params) all build their errors here.
"""

from __future__ import annotations

import json
from typing import Any


class ItemError(Exception):
    """A request the API answers with an error: one error-file line in a batch."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


# -- the API's wording ----------------------------------------------------------------------


def json_kind(value: Any) -> str:
    """How the API names a JSON value's type in its messages ("an integer", "a string"...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def fmt(value: Any) -> str:
    """A value as the API prints it inside a message (JSON literals, no quotes on strings)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def supported(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def missing(param: str) -> ItemError:
    return ItemError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def invalid_type(param: str, expected: str, value: Any) -> ItemError:
    return ItemError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {json_kind(value)} instead.",
        param=param,
        code="invalid_type",
    )


def invalid_value(param: str, value: Any, allowed: tuple[str, ...] | list[str]) -> ItemError:
    return ItemError(
        400,
        f"Invalid value: '{fmt(value)}'. Supported values are: {supported(allowed)}.",
        param=param,
        code="invalid_value",
    )


def out_of_range(
    param: str, value: float, bound: float, *, above: bool, integer: bool
) -> ItemError:
    number = "integer" if integer else "decimal"
    side, op = ("above maximum", "<=") if above else ("below minimum", ">=")
    code = f"{number}_{'above_max' if above else 'below_min'}_value"
    return ItemError(
        400,
        f"Invalid '{param}': {number} {side} value. Expected a value {op} {fmt(bound)}, "
        f"but got {fmt(value)} instead.",
        param=param,
        code=code,
    )


def unsupported_parameter(param: str, hint: str = "") -> ItemError:
    return ItemError(
        400,
        f"Unsupported parameter: '{param}' is not supported with this model.{hint}",
        param=param,
        code="unsupported_parameter",
    )


def unsupported_value(param: str, message: str) -> ItemError:
    return ItemError(400, f"Unsupported value: {message}", param=param, code="unsupported_value")


def model_not_found(model: str) -> ItemError:
    return ItemError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def injected_error(kind: str, model: str) -> ItemError:
    """The genuine API error for an item-error fault kind."""
    if kind == "rate_limit":
        return ItemError(
            429,
            f"Rate limit reached for {model} in organization org-emulator on tokens per min "
            "(TPM): Limit 200000, Used 200000, Requested 1000. Please try again in 300ms. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            type="tokens",
            code="rate_limit_exceeded",
        )
    if kind == "overloaded":
        return ItemError(
            503,
            "The engine is currently overloaded, please try again later.",
            type="server_error",
        )
    if kind == "server":
        return ItemError(
            500,
            "The server had an error while processing your request. Sorry about that!",
            type="server_error",
        )
    return ItemError(
        400,
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 131072 tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )

