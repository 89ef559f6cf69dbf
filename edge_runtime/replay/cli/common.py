"""What the recording commands share: argument types, the broker to talk to, and running a
command's coroutine until it ends or Ctrl-C / SIGTERM asks it to stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import signal
from collections.abc import Coroutine
from datetime import date
from typing import Any, TypeAlias, TypeVar

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.ops.logs import setup_logging
from edge_runtime.replay.timeline import TimeShift

__all__ = [
    "Subparsers",
    "add_broker_options",
    "broker_from_args",
    "loop_run",
    "parse_date",
    "parse_size",
    "parse_speed",
    "parse_time_shift",
    "run_until_stopped",
]

T = TypeVar("T")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


# -- argument types --------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``"500k"``, ``"10M"``, ``"1.5G"`` or a byte count (powers of 1024)."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500k, 10M, 2G)")
    number, unit = float(match[1]), match[2].lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def parse_speed(text: str) -> float:
    """``"1"`` (as recorded), ``"10"`` or ``"10x"`` (ten times faster), ``"max"``/``"0"``."""
    value = text.strip().lower()
    if value in ("max", "inf", "0"):
        return math.inf
    value = value.removesuffix("x").removesuffix("×")
    try:
        speed = float(value)
    except ValueError:
        speed = -1.0
    if not speed > 0:
        raise argparse.ArgumentTypeError(f"not a speed: {text!r} (e.g. 1, 10x, max)")
    return speed


def parse_time_shift(text: str) -> TimeShift:
    """``now``, ``none`` or a number of seconds added to every recorded time."""
    if text in ("now", "none"):
        return text  # type: ignore[return-value]  # narrowed by the test above
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time shift: {text!r} (now, none or seconds)"
        ) from None


def parse_date(text: str) -> date:
    """An ISO day, ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (YYYY-MM-DD)") from None


def broker_from_args(args: argparse.Namespace) -> BrokerConfig:
    """The broker to talk to: the config's site broker (with its TLS and credentials), the
    ``--broker HOST:PORT`` given, or 127.0.0.1:1883."""
    broker = BrokerConfig()
    if args.config:
        from edge_runtime.config.loader import load_config  # noqa: PLC0415 (loads plugins)

        broker = load_config(args.config).site.site_broker
        if broker.embedded:
            raise EdgeRuntimeError(
                f"{args.config} runs an embedded broker; pass the running one with --broker"
            )
    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not port.isdigit():
            raise EdgeRuntimeError(f"--broker {args.broker!r}: expected HOST:PORT")
        broker = broker.model_copy(update={"host": host or "127.0.0.1", "port": int(port)})
    return broker


def add_broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="broker as HOST:PORT (default: the config's, or :1883)")
    p.add_argument("-c", "--config", help="site config whose site broker (TLS, credentials) to use")


# -- running a command ----------------------------------------------------------------------


def run_until_stopped(coro_fn: Any, *args: Any) -> Any:
    """Run ``coro_fn(*args, stop)`` with Ctrl-C and SIGTERM setting ``stop``."""

    setup_logging("text", "WARNING")  # connection problems, nothing routine

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await coro_fn(*args, stop)

    return loop_run(main())


def loop_run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # noqa: PLC0415 (optional speed-up; not on every platform)
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
