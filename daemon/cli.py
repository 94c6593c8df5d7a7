"""The ``batchd`` command line. ``main(argv)`` takes its arguments, so tests call it directly."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence


def _emulator_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulator", help="run the provider emulator (OpenAI, Anthropic, Gemini)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8089, help="port (0 picks a free one)")
    p.add_argument("--state-dir", help="keep files, batches and results here across restarts")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiplies every batch phase duration; 0 ends a batch as soon as it is polled",
    )
    p.add_argument("--faults", help="fault file (JSON or TOML) to start with")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _emulator_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "emulator":
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
    return 2


if __name__ == "__main__":
    sys.exit(main())
