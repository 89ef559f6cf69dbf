"""``edge-runtime replay``: a recording (or a video as a camera) to a broker or into a site."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.replay._progress import ProgressLine
from edge_runtime.replay.cli.common import (
    Subparsers,
    add_broker_options,
    broker_from_args,
    parse_speed,
    parse_time_shift,
    run_until_stopped,
)
from edge_runtime.replay.player import replay_to_broker
from edge_runtime.replay.reader import RecordingReader, is_recording
from edge_runtime.replay.timeline import ReplayProgress

__all__ = ["add_replay", "cmd_replay"]

_VIDEO_SUFFIXES = {".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mjpeg", ".mjpg", ".webm", ".mpg"}


def cmd_replay(args: argparse.Namespace) -> int:
    broker = broker_from_args(args)
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
        result = run_until_stopped(go)
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
    from edge_runtime.replay.source import ReplaySource  # noqa: PLC0415
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

    run_until_stopped(go)
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


def add_replay(sub: Subparsers) -> None:
    p = sub.add_parser(
        "replay",
        help="publish a recording (or a video as a camera) to a broker",
        description="Publish a recording's messages to a broker with their payloads, QoS and "
        "retain flags, at the recorded pace, N times faster or as fast as possible. A video "
        "file or an image folder replays as one camera (--camera) of JPEG frames.",
    )
    p.add_argument("file", help="recording, video file or folder of images")
    add_broker_options(p)
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
