"""``edge-runtime recording info``: what a recording holds, as a table or JSON."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import orjson

from edge_runtime.replay._progress import human_bytes
from edge_runtime.replay.cli.common import Subparsers
from edge_runtime.replay.reader import RecordingReader

__all__ = ["add_recording", "cmd_info"]


def cmd_info(args: argparse.Namespace) -> int:
    info = RecordingReader(args.file).scan()
    if args.json:
        print(orjson.dumps(info.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0
    h = info.header

    def when(t: float | None) -> str:
        return (
            "-" if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
        )

    rows = [
        ("file", f"{info.path} ({human_bytes(info.file_bytes)})"),
        ("format", f"EDGEREC1 version {h.version}, written by {h.tool}"),
        ("created", when(h.created_at)),
        ("source", h.source or "-"),
        ("filters", ", ".join(h.filters) or "-"),
        ("attribution", h.attribution or "-"),
        ("notes", h.notes or "-"),
        ("messages", f"{info.count:,} ({human_bytes(info.payload_bytes)} of payload)"),
        ("first", when(info.first_at)),
        ("last", when(info.last_at)),
        ("duration", f"{info.duration_s:,.3f} s"),
        ("qos", ", ".join(f"{q}: {n:,}" for q, n in sorted(info.qos.items())) or "-"),
        ("retained", f"{info.retained:,}"),
        ("closed", "cleanly" if info.closed_cleanly else "no (recording interrupted)"),
        (
            "torn tail",
            "none"
            if info.tail is None
            else f"{info.tail.nbytes:,} bytes at offset {info.tail.offset:,} ({info.tail.reason}); "
            "every record before it is readable",
        ),
    ]
    if h.meta:
        rows.append(("meta", orjson.dumps(dict(h.meta)).decode()))
    for name, value in rows:
        print(f"{name:>12}  {value}")
    topics = sorted(info.topics.items(), key=lambda kv: (-kv[1], kv[0]))
    print(f"{'topics':>12}  {len(topics):,}")
    for topic, n in topics[: args.topics]:
        print(f"{'':>12}  {n:>10,}  {topic}")
    if len(topics) > args.topics:
        print(f"{'':>12}  ... {len(topics) - args.topics:,} more (--topics N)")
    return 0


def add_recording(sub: Subparsers) -> None:
    p = sub.add_parser("recording", help="inspect recordings")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("info", help="header, messages, duration, topics, torn tail")
    q.add_argument("file", help="recording file")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--topics", type=int, default=20, help="how many topics to list")
    q.set_defaults(func=cmd_info)
