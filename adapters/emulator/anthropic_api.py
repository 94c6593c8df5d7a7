"""Anthropic wire protocol for the emulator: the Message Batches API under ``/v1/messages``.

The official ``anthropic`` SDK is pointed at the emulator with ``base_url=<emulator url>`` (no
``/v1``: the SDK's paths carry it). Routes (as the SDK calls them) and their route classes:

    POST   /v1/messages/batches                      batches.create
    GET    /v1/messages/batches                      batches.list
    GET    /v1/messages/batches/{id}                 batches.get
    POST   /v1/messages/batches/{id}/cancel          batches.cancel
    DELETE /v1/messages/batches/{id}                 batches.delete
    GET    /v1/messages/batches/{id}/results         batches.results

A batch's state is computed when it is looked at: it ends (and its requests are run, once,
under the batch's lock) when the timing says so. Retrieve, list and results count as looking;
cancel and delete act on the state last observed, so at time scale 0 a batch can still be
cancelled (or refused deletion) right after its creation.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from . import anthropic_checks as checks
from . import anthropic_items as items
from .anthropic_cache import PromptCache
from .core import ApiError, Context, external_base, json_response, read_json, rfc3339
from .faults import FaultSet
from .journal import item_digest
from .models import ANTHROPIC_VERSIONS

BATCH_KIND = "anthropic_batch"
CACHE_KIND = "anthropic_cache_prefix"
BASE_PATH = "/v1/messages/batches"
MAX_BATCH_BYTES = 256_000_000  # "256 MB", decimal (the stricter reading)
EXPIRES_AFTER_S = 24 * 3600
RESULTS_KEPT_S = 29 * 24 * 3600  # results downloadable for 29 days after creation
CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_REQUESTS = 100_000
NOT_A_DICT = checks.NOT_A_DICT
AUTH_MESSAGES = {
    "No API key was provided.": "x-api-key header is required",
    "Incorrect API key provided.": "invalid x-api-key",
}


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- the provider contract -------------------------------------------------------------
    def register(self, app: web.Application) -> None:
        route = self.ctx.route
        one = BASE_PATH + "/{batch_id}"
        app.router.add_post(BASE_PATH, route(self, "batches.create", self._create))
        app.router.add_get(BASE_PATH, route(self, "batches.list", self._list))
        app.router.add_get(one, route(self, "batches.get", self._retrieve))
        app.router.add_delete(one, route(self, "batches.delete", self._delete))
        app.router.add_post(one + "/cancel", route(self, "batches.cancel", self._cancel))
        app.router.add_get(one + "/results", route(self, "batches.results", self._results))

    def error_response(self, err: ApiError, request_id: str) -> web.Response:
        message = err.message
        if err.code == "authentication_error":
            message = AUTH_MESSAGES.get(message, message)
        body = {
            "type": "error",
            "error": {"type": err.code, "message": message},
            "request_id": request_id,
        }
        return json_response(body, err.status)

    def api_key(self, request: web.Request) -> str | None:
        """``x-api-key`` (0.x SDKs, curl) wins over ``Authorization: Bearer`` (2.x SDKs)."""
        key = request.headers.get("x-api-key")
        if key:
            return key
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None

    def request_id_header(self) -> str:
        return "request-id"

    # -- handlers --------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        version = _version(request)
        body = await read_json(request, MAX_BATCH_BYTES)
        blob_id, path = self.ctx.store.new_blob()
        accepted = await asyncio.to_thread(accept_requests, body, path)
        batch_id = self.ctx.new_id("msgbatch_")
        batch = {
            "id": batch_id,
            "created": self.ctx.now(),
            "n": accepted.n,
            "version": version,
            "fate": self.ctx.faults.arm_batch(self.name, accepted.first_model),
            "input_blob": blob_id,
            "results_blob": None,
            "ended_at": None,
            "cancel_at": None,
            "cancel_ran": None,
            "archived_at": None,
            "counts": None,
        }
        self.ctx.store.put(BATCH_KIND, batch_id, batch)
        self.ctx.journal.receive_items(self.name, accepted.digests)
        return json_response(self._view(batch, request))

    async def _retrieve(self, request: web.Request) -> web.Response:
        _version(request)
        batch = await self._settle(self._load(request), polled=True)
        return json_response(self._view(batch, request))

    async def _list(self, request: web.Request) -> web.Response:
        _version(request)
        limit = _limit(request.query.get("limit"))
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after and before:
            raise ApiError(
                400, "invalid_request_error", "Only one of after_id and before_id may be given."
            )
        if before:
            page, more = self.ctx.store.list(
                BATCH_KIND, newest_first=False, after=before, limit=limit
            )
            page.reverse()
        else:
            page, more = self.ctx.store.list(BATCH_KIND, after=after or None, limit=limit)
        data = [self._view(await self._settle(b, polled=True), request) for b in page]
        return json_response(
            {
                "data": data,
                "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def _cancel(self, request: web.Request) -> web.Response:
        _version(request)
        batch = await self._settle(self._load(request), polled=False)
        async with self.ctx.lock(batch["id"]):
            batch = self._load(request)
            if batch["ended_at"] is not None:
                raise ApiError(
                    400,
                    "invalid_request_error",
                    f"Message Batch {batch['id']} has already ended and cannot be canceled.",
                )
            if batch["cancel_at"] is None:
                batch["cancel_at"] = self.ctx.now()
                batch["cancel_ran"] = self._items_run(batch)
                self.ctx.store.put(BATCH_KIND, batch["id"], batch)
        return json_response(self._view(batch, request))

    async def _delete(self, request: web.Request) -> web.Response:
        _version(request)
        batch = await self._settle(self._load(request), polled=False)
        async with self.ctx.lock(batch["id"]):
            batch = self._load(request)
            if batch["ended_at"] is None:
                raise ApiError(
                    400,
                    "invalid_request_error",
                    f"Message Batch {batch['id']} cannot be deleted while it is still "
                    "processing. Cancel it first and wait for processing to end.",
                )
            self.ctx.store.delete(BATCH_KIND, batch["id"])
            self.ctx.store.delete_blob(batch["input_blob"])
            self.ctx.store.delete_blob(batch["results_blob"])
        return json_response({"id": batch["id"], "type": "message_batch_deleted"})

    async def _results(self, request: web.Request) -> web.StreamResponse:
        _version(request)
        batch = await self._settle(self._load(request), polled=False)
        if batch["ended_at"] is None:
            raise ApiError(
                400,
                "invalid_request_error",
                f"Message Batch {batch['id']} has not finished processing; results are "
                "available once processing_status is ended.",
            )
        path = self.ctx.store.blob_path(batch["results_blob"])
        if self._archived_at(batch) is not None or not path.exists():
            raise ApiError(
                404,
                "not_found_error",
                f"The results of Message Batch {batch['id']} are no longer available "
                "(the batch was archived).",
            )
        return web.FileResponse(path, headers={"Content-Type": "application/x-jsonl"})

    # -- batch state -----------------------------------------------------------------------
    def _load(self, request: web.Request) -> dict[str, Any]:
        batch_id = request.match_info["batch_id"]
        batch = self.ctx.store.get(BATCH_KIND, batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"Message Batch {batch_id} not found.")
        return batch

    def _items_run(self, batch: dict[str, Any]) -> int:
        """How many requests had been run when a cancel came in (none, at time scale 0)."""
        if self.ctx.time_scale <= 0:
            return 0
        return int(self.ctx.progress(batch["created"], batch["n"]) * batch["n"])

    def _due(self, batch: dict[str, Any], polled: bool) -> bool:
        if batch["cancel_at"] is not None:
            if self.ctx.time_scale <= 0:
                return polled
            waited = self.ctx.now() - batch["cancel_at"]
            return waited >= self.ctx.timing.finalizing_s * self.ctx.time_scale
        return self.ctx.phase(batch["created"], batch["n"], polled=polled) == "ended"

    async def _settle(self, batch: dict[str, Any], *, polled: bool) -> dict[str, Any]:
        """End the batch if its time has come, running its requests exactly once."""
        if batch["ended_at"] is not None or not self._due(batch, polled):
            return batch
        async with self.ctx.lock(batch["id"]):
            fresh = self.ctx.store.get(BATCH_KIND, batch["id"])
            if fresh is None:  # deleted while we waited for the lock
                raise ApiError(404, "not_found_error", f"Message Batch {batch['id']} not found.")
            if fresh["ended_at"] is not None:
                return fresh
            return await self._finish(fresh)

    async def _finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        fate = batch["fate"]
        run_limit, tail = batch["n"], "expired"
        if batch["cancel_at"] is not None:
            run_limit, tail = batch["cancel_ran"], "canceled"
        elif "expire" in fate:
            run_limit = int(fate["expire"]["fraction"] * batch["n"])
        results_blob, results_path = self.ctx.store.new_blob()
        faults = self.ctx.faults
        fired_before = [f.fired for f in faults.faults]
        plan = items.Plan(
            batch_id=batch["id"],
            input_path=self.ctx.store.blob_path(batch["input_blob"]),
            output_path=results_path,
            version=batch["version"],
            run_limit=run_limit,
            tail=tail,
            fail_all="batch_fail" in fate,
            faults=copy.deepcopy(faults),
            cache=PromptCache(
                self._known_prefixes(), self.ctx.now(), faults.settings.cache_lanes
            ),
        )
        outcome = await asyncio.to_thread(items.process_batch, plan)
        _merge_faults(faults, plan.faults, fired_before)
        self._remember_prefixes(plan.cache.changes)
        now = self.ctx.now()
        batch.update(ended_at=now, counts=outcome.counts, results_blob=results_blob)
        if "results_gone" in fate:
            batch["archived_at"] = now
        self.ctx.store.put(BATCH_KIND, batch["id"], batch)
        self.ctx.journal.settle_items(self.name, outcome.settled)
        return batch

    def _archived_at(self, batch: dict[str, Any]) -> float | None:
        if batch["archived_at"] is not None or batch["ended_at"] is None:
            return batch["archived_at"]
        if self.ctx.time_scale > 0:
            gone = batch["created"] + RESULTS_KEPT_S * self.ctx.time_scale
            if self.ctx.now() >= gone:
                return gone
        return None

    def _view(self, batch: dict[str, Any], request: web.Request) -> dict[str, Any]:
        """The MessageBatch object (all its fields, nullable ones as null)."""
        ended = batch["ended_at"] is not None
        if ended:
            status, counts = "ended", batch["counts"]
        else:
            status = "in_progress" if batch["cancel_at"] is None else "canceling"
            counts = {"processing": batch["n"], "succeeded": 0, "errored": 0}
            counts |= {"canceled": 0, "expired": 0}
        results_url = f"{external_base(request)}{BASE_PATH}/{batch['id']}/results"
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": rfc3339(batch["created"]),
            "expires_at": rfc3339(batch["created"] + EXPIRES_AFTER_S),
            "ended_at": rfc3339(batch["ended_at"]),
            "cancel_initiated_at": rfc3339(batch["cancel_at"]),
            "archived_at": rfc3339(self._archived_at(batch)),
            "results_url": results_url if ended else None,
        }

    # -- prompt-cache entries (persisted, so a restart keeps them) ---------------------------
    def _known_prefixes(self) -> dict[str, float]:
        """Prefix digest -> emulator time its cache entry expires (read from the store each
        time, so a reset or another process's writes are seen; expired entries are dropped)."""
        now = self.ctx.now()
        known: dict[str, float] = {}
        for obj in self.ctx.store.all(CACHE_KIND):
            expires = float(obj.get("expires", 0.0))
            if expires > now:
                known[obj["id"]] = expires
            else:
                self.ctx.store.delete(CACHE_KIND, obj["id"])
        return known

    def _remember_prefixes(self, changes: dict[str, float]) -> None:
        for digest, expires in changes.items():
            current = self.ctx.store.get(CACHE_KIND, digest)
            if current is None or expires > float(current.get("expires", 0.0)):
                self.ctx.store.put(CACHE_KIND, digest, {"id": digest, "expires": expires})


def _version(request: web.Request) -> str:
    """The ``anthropic-version`` header, refused the way the real API refuses it."""
    value = request.headers.get("anthropic-version")
    if not value:
        raise ApiError(400, "invalid_request_error", "anthropic-version: header is required")
    if value not in ANTHROPIC_VERSIONS:
        raise ApiError(
            400, "invalid_request_error", f'anthropic-version: "{value}" is not a valid version'
        )
    return value


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(
            400,
            "invalid_request_error",
            "limit: Input should be a valid integer, unable to parse string as an integer",
        ) from None
    if limit < 1:
        raise ApiError(
            400, "invalid_request_error", "limit: Input should be greater than or equal to 1"
        )
    if limit > 1000:
        raise ApiError(
            400, "invalid_request_error", "limit: Input should be less than or equal to 1000"
        )
    return limit


def _merge_faults(live: FaultSet, used: FaultSet, fired_before: list[int]) -> None:
    """Carry the item-error faults fired in the worker thread's copy back to the live set."""
    for fault, copied, before in zip(live.faults, used.faults, fired_before, strict=False):
        if fault.kind == "item_error":
            fault.fired += copied.fired - before
    live.rng.setstate(used.rng.getstate())


# -- the create call's own checks (synchronous, whole-call refusals) ----------------------


def _bad_call(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


@dataclass
class Accepted:
    n: int
    digests: list[str]
    first_model: str


def accept_requests(body: Any, path: Path) -> Accepted:
    """Check a create body the way the real API does synchronously, then store its requests.

    Raises ApiError (400) for what refuses the whole call; writes one request per line to
    ``path`` otherwise.
    """
    requests = _check_envelope(body)
    seen: dict[str, int] = {}
    for index, item in enumerate(requests):
        custom_id = _check_request(index, item)
        if custom_id in seen:
            raise _bad_call(
                f"requests.{index}.custom_id: Duplicate custom_id {custom_id!r} (also used by "
                f"requests.{seen[custom_id]}); custom_id must be unique within a Message Batch."
            )
        seen[custom_id] = index
    digests = []
    with open(path, "w", encoding="utf-8") as out:
        for item in requests:
            params = item["params"]
            digests.append(item_digest(str(params.get("model", "")), params))
            out.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n")
    first_model = requests[0]["params"].get("model")
    return Accepted(len(requests), digests, first_model if isinstance(first_model, str) else "")


def _check_envelope(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        raise _bad_call(NOT_A_DICT)
    extra = sorted(set(body) - {"requests"})
    if extra:
        raise _bad_call(f"{extra[0]}: Extra inputs are not permitted")
    if "requests" not in body:
        raise _bad_call("requests: Field required")
    requests = body["requests"]
    if not isinstance(requests, list):
        raise _bad_call("requests: Input should be a valid list")
    if not requests:
        raise _bad_call("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > MAX_REQUESTS:
        raise _bad_call(
            f"requests: List should have at most {MAX_REQUESTS} items after validation, "
            f"not {len(requests)}"
        )
    return requests


def _check_request(index: int, item: Any) -> str:
    where = f"requests.{index}"
    if not isinstance(item, dict):
        raise _bad_call(f"{where}: {NOT_A_DICT}")
    extra = sorted(set(item) - {"custom_id", "params"})
    if extra:
        raise _bad_call(f"{where}.{extra[0]}: Extra inputs are not permitted")
    for key in ("custom_id", "params"):
        if key not in item:
            raise _bad_call(f"{where}.{key}: Field required")
    custom_id = item["custom_id"]
    if not isinstance(custom_id, str):
        raise _bad_call(f"{where}.custom_id: Input should be a valid string")
    if not custom_id:
        raise _bad_call(f"{where}.custom_id: String should have at least 1 character")
    if len(custom_id) > 64:
        raise _bad_call(f"{where}.custom_id: String should have at most 64 characters")
    if not _CUSTOM_ID_RE.fullmatch(custom_id):
        raise _bad_call(f"{where}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'")
    if not isinstance(item["params"], dict):
        raise _bad_call(f"{where}.params: {NOT_A_DICT}")
    return custom_id
