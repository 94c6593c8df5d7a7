"""SIGHUP: read the configuration again, check it, and apply what can change while batchd runs.

The new configuration is loaded and checked exactly as at start-up (``load_config``). An
invalid one is logged, and the running configuration is kept. Otherwise each changed key is
either applied at once (intervals, batch sizes, linger, retries, limits per hour, log level,
adaptation and caching settings, routes and models, settle time, the batch sizing keys
``batch_sizing``, ``canary_*`` and ``max_batch_size`` and a model's ``enqueued_token_limit``
(read at the next plan), ``retention_days`` and ``state_retention_days`` (read by each
retention run): they are read where they are used) or logged as "needs a restart" and left as
it was (folders, provider URLs and options, the timeout and concurrency the adapters were
built with, the metrics endpoint's address). Never an unlogged death: any error while
reloading is logged and the daemon goes on with the configuration it had.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from loguru import logger

from .config import Config, ConfigError, ProviderConfig, adapt_policy

# Keys the running daemon cannot take over: the folders (files are held there, the lock and
# database are open), the emulator wiring, what the provider clients were built with, and the
# metrics endpoint's address (bound at start).
RESTART_KEYS = frozenset(
    {
        "root", "inbox", "outbox", "processed", "state_dir", "once", "emulate", "emulator_url",
        "request_timeout_s", "metrics_listen",
    }
)  # fmt: skip
RESTART_PROVIDER_KEYS = frozenset({"base_url", "max_concurrent_submits", "options"})
_IGNORED = frozenset({"policy", "explicit"})  # derived from the other keys


def changed_keys(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Each key whose value differs, dotted for provider keys (``providers.openai.batch_size``)."""
    out: dict[str, tuple[Any, Any]] = {}
    for f in fields(Config):
        if f.name in _IGNORED or f.name == "providers":
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before != after:
            out[f.name] = (before, after)
    for name, pc in new.providers.items():
        was = old.providers[name]
        for f in fields(ProviderConfig):
            before, after = getattr(was, f.name), getattr(pc, f.name)
            if before != after:
                out[f"providers.{name}.{f.name}"] = (before, after)
    return out


def needs_restart(key: str) -> bool:
    if key.startswith("providers."):
        return key.rsplit(".", 1)[1] in RESTART_PROVIDER_KEYS
    return key in RESTART_KEYS


def merged(old: Config, new: Config, live: set[str]) -> Config:
    """``old`` with the ``live`` keys of ``new``: the keys that need a restart keep their
    running values (so the daemon never half-applies one)."""
    top = {k: getattr(new, k) for k in live if not k.startswith("providers.")}
    providers = dict(old.providers)
    for key in live:
        if key.startswith("providers."):
            _, name, attr = key.split(".", 2)
            providers[name] = replace(providers[name], **{attr: getattr(new.providers[name], attr)})
    policy = old.policy
    if live & {"models", "routes", "on_unsupported"} and new.policy is not None:
        # The Anthropic API version is the adapter's (an option: needs a restart).
        version = adapt_policy(old).anthropic_api_version
        policy = replace(new.policy, anthropic_api_version=version)
    return replace(old, **top, providers=providers, policy=policy)


def reload_config(current: Config, load: Callable[[], Config]) -> Config | None:
    """The configuration to run with after a SIGHUP, or None to keep ``current``."""
    try:
        new = load()
    except ConfigError as exc:
        logger.bind(event="config.reload_refused", error_kind="config_refused").error(
            "configuration reload refused: {}; the running configuration is kept", exc
        )
        return None
    except Exception as exc:  # contained: a reload never ends the daemon
        log = logger.bind(event="config.reload_failed", error_kind="internal_error")
        log.opt(exception=exc).error("configuration reload failed; the running one is kept")
        return None
    changes = changed_keys(current, new)
    if not changes:
        logger.bind(event="config.reload").info("configuration reloaded: nothing changed")
        return None
    live = {k for k in changes if not needs_restart(k)}
    for key in sorted(set(changes) - live):
        before, after = changes[key]
        logger.bind(event="config.needs_restart").warning(
            "configuration reload: {} changed ({!r} -> {!r}) but needs a restart; the running "
            "value is kept until then",
            key, before, after,
        )  # fmt: skip
    if not live:
        return None
    for key in sorted(live):
        before, after = changes[key]
        logger.bind(event="config.changed").info(
            "configuration reload: {} = {!r} (was {!r})", key, after, before
        )
    return merged(current, new, live)


__all__ = ["changed_keys", "merged", "needs_restart", "reload_config"]
