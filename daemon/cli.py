"""The ``batchd`` command line. ``main(argv)`` takes its arguments, so tests call it directly.

Every command loads the configuration the same way (``_config``: checked once, at load), and a
configuration error is exit 2 with its one-line reason, never a traceback. Output goes through
``emit``, so a reader that goes away ends a command quietly. ``submit`` and ``status`` live in
``cli_submit.py`` and ``cli_status.py``; modules are imported when their command runs, so
``batchd run`` takes over SIGHUP within milliseconds of starting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .early_signals import hold_sighup

if TYPE_CHECKING:  # the configuration (and asyncio) are imported when a command runs
    from .config import Config


def _common_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", help="TOML config file (or BATCHD_CONFIG; default /etc/batchd/batchd.toml)"
    )
    p.add_argument("--root", help="lay out inbox/, outbox/, processed/, state/ under this folder")
    p.add_argument("--inbox", help="folder watched for *.jsonl files")
    p.add_argument("--outbox", help="folder results are written to")
    p.add_argument("--state-dir", dest="state_dir", help="folder of the SQLite state")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchd", description="LLM Batch API daemon")
    parser.add_argument("--version", action="version", version=f"batchd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    _common_paths(run)
    run.add_argument(
        "--once",
        action="store_true",
        default=None,
        help="drain: take what is in the inbox, finish it, then exit 0",
    )
    target = run.add_mutually_exclusive_group()
    target.add_argument(
        "--emulate",
        action="store_true",
        default=None,
        help="start the provider emulator in-process and use it",
    )
    target.add_argument(
        "--emulator-url",
        dest="emulator_url",
        help="point every provider at an emulator running there",
    )
    run.add_argument(
        "--log-json",
        dest="log_json",
        action="store_true",
        default=None,
        help="one JSON object per log line",
    )
    run.add_argument(
        "--metrics-listen",
        dest="metrics_listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464)",
    )

    submit = sub.add_parser("submit", help="copy files into the inbox atomically")
    _common_paths(submit)
    submit.add_argument("files", nargs="+", type=Path)

    status = sub.add_parser("status", help="files, batches and errors, from the state database")
    _common_paths(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--all", action="store_true", help="history too: finished jobs, batches")
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds")
    status.add_argument(
        "--interval", type=float, default=2.0, help="seconds between --watch redraws (2)"
    )
    status.add_argument("--count", type=int, help="--watch: stop after this many redraws")

    cancel = sub.add_parser(
        "cancel", help="stop paying for a file: its unsent requests and own batches canceled"
    )
    _common_paths(cancel)
    cancel.add_argument("target", help="the file name as dropped, or a job id (#12 or 12)")

    gc = sub.add_parser("gc", help="retention now: old outbox/processed files and job rows")
    _common_paths(gc)

    check = sub.add_parser(
        "check", help="dry run: what a file becomes (models, batches, adaptations, cost)"
    )
    check.add_argument("--config", help="TOML config file (or BATCHD_CONFIG)")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument(
        "--max-invalid",
        dest="max_invalid",
        type=int,
        default=20,
        help="invalid lines listed before only counting them (default 20)",
    )

    models = sub.add_parser("models", help="what each model family accepts, and its prices")
    models.add_argument("--config", help="TOML config file (or BATCHD_CONFIG)")
    models.add_argument("model", nargs="?", help="one model (default: every family)")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument("--markdown", action="store_true", help="the README's model tables")

    emu = sub.add_parser("emulator", help="run the provider emulator (OpenAI, Anthropic, Gemini)")
    emu.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    emu.add_argument("--port", type=int, default=8089, help="port (0 picks a free one)")
    emu.add_argument("--state-dir", help="keep files, batches and results here across restarts")
    emu.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies every batch phase duration; 0 ends a batch as soon as it is polled",
    )
    emu.add_argument("--faults", help="fault file (JSON or TOML) to start with")
    return parser


def _config(args: argparse.Namespace) -> Config:
    """The one way every command loads the configuration (checked once, at load)."""
    from .config import load_config

    flags = {
        k: getattr(args, k, None)
        for k in (
            "root",
            "inbox",
            "outbox",
            "state_dir",
            "once",
            "emulate",
            "emulator_url",
            "log_json",
            "metrics_listen",
        )
    }
    return load_config(args.config, flags)


def emit(text: str) -> None:
    """Write to stdout. A reader that went away (``batchd status | head -1``) ends the output
    quietly: the rest is dropped, and the exit status stays the command's own."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    """Later writes, and Python's own flush at exit, go nowhere instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with suppress(OSError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _cmd_run(args: argparse.Namespace) -> int:
    """Exit 0 (stopped, or --once done), 1 (an unexpected error, or the state database lost:
    a supervisor restarts it), 2 (configuration or state folder unusable), 3 (--once: requests
    left wait for a provider that cannot proceed), 130 (interrupted during start-up)."""
    from .app import run
    from .logs import setup_logging
    from .startup import StartupError

    cfg = _config(args)
    setup_logging(json_lines=cfg.log_json, level=cfg.log_level)
    try:
        return run(cfg, reload=lambda: _config(args))
    except StartupError as exc:
        from loguru import logger

        logger.bind(event="startup.refused", error_kind="startup_refused").error(
            "batchd cannot start: {}", exc
        )
        return 2


def _cmd_submit(args: argparse.Namespace) -> int:
    from .cli_submit import submit

    return submit(_config(args), args.files)


def _cmd_status(args: argparse.Namespace) -> int:
    from . import cli_status

    return cli_status.run(
        _config(args),
        as_json_view=args.json,
        show_all=args.all,
        watch_view=args.watch,
        interval_s=max(0.05, args.interval),
        count=None if args.count is None else max(1, args.count),
        emit=emit,
    )


def _cmd_cancel(args: argparse.Namespace) -> int:
    """Exit 0 (asked for, or already canceled), 1 (no such job, finished, ambiguous)."""
    from .cancel import run_cancel

    code, text = run_cancel(_config(args).state_dir, args.target)
    if code:
        print(f"batchd cancel: {text}", file=sys.stderr)
    else:
        emit(text + "\n")
    return code


def _cmd_gc(args: argparse.Namespace) -> int:
    """Exit 0, or 1 (database not writable, some files not removable)."""
    from .gc import run_gc

    code, text = run_gc(_config(args))
    if code:
        print(text, end="", file=sys.stderr)
    else:
        emit(text)
    return int(code)


def _cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when every line is valid, 1 when some are not, 2 when the file is unreadable."""
    from .check import check_file, render

    report = check_file(args.file, _config(args), max_invalid=max(0, args.max_invalid))
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n" if args.json else render(report)
    emit(text)
    if report["file_error"] is not None:
        return 2
    return 0 if report["ok"] else 1


def _cmd_models(args: argparse.Namespace) -> int:
    """Exit 0, or 1 for a model nothing routes. ``--markdown``: the packaged registry's tables."""
    from . import models_cmd
    from .config import adapt_policy

    if args.markdown:
        emit(models_cmd.render_markdown(models_cmd.default_registry()))
        return 0
    policy = adapt_policy(_config(args))
    try:
        text = models_cmd.run(policy.registry, policy.routes, args.model, as_json=args.json)
    except LookupError as exc:
        print(f"batchd models: {exc}", file=sys.stderr)
        return 1
    emit(text)
    return 0


def _cmd_emulator(args: argparse.Namespace) -> int:
    import asyncio

    from adapters.emulator import serve
    from adapters.emulator.faults import FaultConfigError

    try:
        asyncio.run(
            serve(
                args.host,
                args.port,
                state_dir=args.state_dir,
                time_scale=args.time_scale,
                faults=args.faults,
            )
        )
    except (FaultConfigError, OSError, ValueError) as exc:
        print(f"batchd emulator: {exc}", file=sys.stderr)
        return 2
    return 0


COMMANDS = {
    "run": _cmd_run,
    "submit": _cmd_submit,
    "status": _cmd_status,
    "cancel": _cmd_cancel,
    "gc": _cmd_gc,
    "check": _cmd_check,
    "models": _cmd_models,
    "emulator": _cmd_emulator,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 2 for a configuration error (named: file, key, reason), without a traceback."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        hold_sighup()  # before the heavy imports: a reload request is never a silent death
    from .config import ConfigError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"batchd: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early, outside emit()
        _stdout_to_devnull()
        return 0


if __name__ == "__main__":
    sys.exit(main())
