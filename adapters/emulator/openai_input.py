"""OpenAI batch input files: validation when a batch is created, and reading them when it runs.

A batch's input file is validated line by line (streamed, in a worker thread) when the batch is
created: problems do not fail the create call, they make the batch end ``failed`` with
``errors.data`` entries, as the real service does. When the batch runs, :class:`InputReader` reads
the accepted file in chunks and evaluates each item (checks, then the answer), and
:class:`ResultWriter` streams the result lines to a blob.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .core import strict_loads
from .journal import item_digest
from .openai_answers import Answer, answer_chat, prompt_tokens
from .openai_chat import check_chat
from .openai_errors import ItemError, fmt, invalid_type, invalid_value

MAX_REQUESTS = 50_000
MAX_INPUT_BYTES = 200_000_000  # "200 MB"; decimal, the stricter reading
MAX_LINE_ERRORS = 100  # errors.data entries reported for one input file


@dataclass
class Scan:
    """What validation learnt from an input file: its items, or why the batch fails."""

    n: int
    model: str | None
    digests: list[str]
    errors: list[dict[str, Any]]
    tokens: int = 0  # estimated prompt tokens of the accepted items (for enqueued-token quotas)


class LineError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def batch_error(
    code: str, message: str, line: int | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def token_limit_error(model: str | None, limit: int) -> dict[str, Any]:
    """The errors.data entry of a batch refused for the organisation's enqueued-token quota."""
    return batch_error(
        "token_limit_exceeded",
        f"Enqueued token limit reached for {model} in organization org-emulator. Limit: "
        f"{limit:,} enqueued tokens. Please try again once some in_progress batches have been "
        "completed.",
    )


def parse_line(raw: bytes, endpoint: str) -> dict[str, Any]:
    """One input line as a request object, or the LineError the validator reports for it."""
    try:
        obj = strict_loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LineError("invalid_json_line", "This line is not parseable as valid JSON.") from None
    if not isinstance(obj, dict):
        raise LineError("invalid_request", "This line is not a JSON object.")
    for key in ("custom_id", "method", "url", "body"):
        if obj.get(key) is None:
            raise LineError("invalid_request", f"Missing required parameter: '{key}'.", key)
    if not isinstance(obj["custom_id"], str):
        raise LineError("invalid_request", invalid_type("custom_id", "a string", 0).message)
    if obj["method"] != "POST":
        err = invalid_value("method", obj["method"], ("POST",))
        raise LineError("invalid_request", err.message, "method")
    if obj["url"] != endpoint:
        raise LineError(
            "url_mismatch",
            f"The URL provided for this request ('{fmt(obj['url'])}') does not match the "
            f"batch endpoint ('{endpoint}').",
            "url",
        )
    if not isinstance(obj["body"], dict):
        err = invalid_type("body", "an object", obj["body"])
        raise LineError("invalid_request", err.message, "body")
    return obj


def scan_input(path: str, size: int, endpoint: str, count_tokens: bool = False) -> Scan:
    """Validate an input file line by line (streaming); runs in a worker thread.

    ``count_tokens``: also estimate the items' prompt tokens (for an enqueued-token quota).
    """
    if size > MAX_INPUT_BYTES:
        msg = f"The input file is larger than the maximum of {MAX_INPUT_BYTES:,} bytes."
        return Scan(0, None, [], [batch_error("file_too_large", msg)])
    scan = Scan(0, None, [], [])
    seen: set[str] = set()
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            scan.n += 1
            if scan.n > MAX_REQUESTS:
                continue
            try:
                obj = parse_line(raw, endpoint)
                _check_unique(obj, seen)
                model = _check_model(obj, scan.model)
            except LineError as err:
                if len(scan.errors) < MAX_LINE_ERRORS:
                    scan.errors.append(batch_error(err.code, err.message, line_no, err.param))
                continue
            scan.model = scan.model or model
            scan.digests.append(item_digest(model or "", obj["body"]))
            if count_tokens:
                scan.tokens += prompt_tokens(obj["body"])
    return _verdict(scan)


def _check_unique(obj: dict[str, Any], seen: set[str]) -> None:
    if obj["custom_id"] in seen:
        raise LineError(
            "duplicate_custom_id",
            "The custom_id for this request is a duplicate of another request. The custom_id "
            "parameter must be unique for each request in a batch.",
            "custom_id",
        )
    seen.add(obj["custom_id"])


def _check_model(obj: dict[str, Any], batch_model: str | None) -> str | None:
    model = obj["body"].get("model")
    if not isinstance(model, str):
        return None  # a per-request problem, answered in the error file
    if batch_model is not None and model != batch_model:
        raise LineError(
            "model_mismatch",
            f"The model '{model}' of this request does not match the model '{batch_model}' of "
            "the other requests in the batch. A batch may only contain requests for one model.",
            "body.model",
        )
    return model


def _verdict(scan: Scan) -> Scan:
    if scan.n > MAX_REQUESTS:
        msg = (
            f"The batch input file contains {scan.n:,} requests, more than the maximum of "
            f"{MAX_REQUESTS:,} requests per batch."
        )
        scan.errors = [batch_error("too_many_tasks", msg)]
    elif scan.n == 0:
        msg = "The batch input file is empty. Please ensure that the batch contains requests."
        scan.errors = [batch_error("empty_file", msg)]
    if scan.errors:
        scan.digests = []
    return scan


@dataclass
class Planned:
    """One item of a batch being run: what it asks, and what the API would answer."""

    index: int
    custom_id: str
    digest: str
    model: str
    body_text: str
    error: ItemError | None = None
    answer: Answer | None = None


def plan_item(index: int, raw: bytes, run: bool, gpt_5_5_stop: bool = True) -> Planned:
    """Evaluate one (already validated) input line; only items that get to run are answered."""
    obj = strict_loads(raw)
    body = obj["body"]
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    item = Planned(
        index, obj["custom_id"], item_digest(model, body), model, json.dumps(body, sort_keys=True)
    )
    if run:
        try:
            item.answer = answer_chat(body, check_chat(body, gpt_5_5_stop=gpt_5_5_stop))
        except ItemError as err:
            item.error = err
    return item


class InputReader:
    """Reads a validated input file in chunks of items (each call: worker-thread I/O)."""

    def __init__(self, path: str, gpt_5_5_stop: bool = True) -> None:
        self._fh = open(path, "rb")
        self._index = 0
        self._gpt_5_5_stop = gpt_5_5_stop

    def next_chunk(self, size: int, run_count: int) -> list[Planned]:
        items: list[Planned] = []
        while len(items) < size:
            raw = self._fh.readline()
            if not raw:
                break
            if not raw.strip():
                continue
            run = self._index < run_count
            items.append(plan_item(self._index, raw, run, self._gpt_5_5_stop))
            self._index += 1
        return items

    def close(self) -> None:
        self._fh.close()


class ResultWriter:
    """Appends JSONL result lines to a blob (each call: worker-thread I/O)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fh = open(path, "wb")
        self.lines = 0

    def write(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            self._fh.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        self.lines += len(lines)

    def close(self) -> int:
        self._fh.close()
        return self.lines
