"""``edge-runtime record``: live MQTT traffic to a recording file."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from edge_runtime.replay._progress import ProgressLine, human_bytes
from edge_runtime.replay.cli.common import (
    Subparsers,
    add_broker_options,
    broker_from_args,
    parse_size,
    run_until_stopped,
)
from edge_runtime.replay.recorder import RecordProgress, record

__all__ = ["add_record", "cmd_record"]


def cmd_record(args: argparse.Namespace) -> int:
    broker = broker_from_args(args)
    filters = args.topic or _config_filters(args.config) or ["#"]
    line = None if args.quiet else ProgressLine()

    def show(p: RecordProgress) -> None:
        if line is not None:
            state = "" if p.connected else "  (broker not connected)"
            line.show(
                f"recording {args.output}: {p.messages:,} messages, {human_bytes(p.bytes)}, "
                f"{p.rate:,.0f} msg/s, {p.elapsed_s:,.0f} s{state}"
            )

    async def go(stop: asyncio.Event) -> Any:
        return await record(
            broker,
            filters,
            args.output,
            max_bytes=args.max_bytes,
            max_seconds=args.max_seconds,
            max_messages=args.max_messages,
            progress=show,
            stop=stop,
            qos=args.qos,
            append=args.append,
            overwrite=args.force,
            notes=args.notes or "",
        )

    result = run_until_stopped(go)
    if line is not None:
        line.done(
            f"recorded {result.messages:,} messages ({human_bytes(result.bytes)}) in "
            f"{result.elapsed_s:,.1f} s to {result.path} [{result.stopped_by}]"
        )
    return 0


def _config_filters(config: str | None) -> list[str]:
    """The topics a site subscribes to, to record exactly what it would receive."""
    if not config:
        return []
    from edge_runtime.config.loader import load_config  # noqa: PLC0415
    from edge_runtime.sources.topics import minimal_filters  # noqa: PLC0415

    loaded = load_config(config)
    topics = [t for p in loaded.pipelines for t in p.topics]
    return list(minimal_filters(topics + loaded.site.ingest.extra_subscriptions))


def add_record(sub: Subparsers) -> None:
    p = sub.add_parser(
        "record",
        help="record live MQTT traffic to a file (Ctrl-C stops and closes it cleanly)",
        description="Record every message (topic, payload, QoS, retain flag, receive time) "
        "matching the topic filters to a recording file (docs/recording-format.md).",
    )
    p.add_argument("output", help="recording file to write (e.g. traffic.edgerec)")
    p.add_argument(
        "-t",
        "--topic",
        action="append",
        help="topic filter, repeatable (default: the config's pipeline topics, else '#')",
    )
    add_broker_options(p)
    p.add_argument("--qos", type=int, choices=[0, 1], default=1, help="subscription QoS")
    p.add_argument("--max-bytes", type=parse_size, help="stop before the file grows past this")
    p.add_argument("--max-seconds", type=float, help="stop after this long")
    p.add_argument("--max-messages", type=int, help="stop after this many messages")
    p.add_argument("--append", action="store_true", help="append to an existing recording")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--notes", help="free text stored in the file's header")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_record)
