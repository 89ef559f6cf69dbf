"""The ``edge-runtime size`` command: sizing answers, calibration, and a check of both."""

from __future__ import annotations

import argparse
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from edge_runtime.sizing.calibrate import CalibrationPlan, calibrate
from edge_runtime.sizing.calibration import Calibration, default_calibration_path
from edge_runtime.sizing.model import SizingAnswer, size_site
from edge_runtime.sizing.profile import load_profile
from edge_runtime.sizing.stress import Assets, StressResult, run_stress

__all__ = ["add_size_parser", "cmd_size", "format_answer", "format_check"]


def add_size_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "size",
        help="cores, memory, spool disk and uplink bandwidth for a site profile",
        description="Answer what a site profile needs on the machine the calibration was "
        "measured on (edge-runtime size PROFILE.toml), measure that calibration "
        "(--calibrate), or run the profile for real and compare (--validate).",
    )
    p.add_argument("profile", nargs="?", type=Path, help="site profile TOML (see examples/)")
    p.add_argument("--calibrate", action="store_true", help="measure per-unit costs here")
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help=f"calibration JSON file (default {default_calibration_path()})",
    )
    p.add_argument("--quick", action="store_true", help="--calibrate: short tests (~1 min)")
    p.add_argument(
        "--camera-models",
        default="fp32,int8",
        help="--calibrate: detector variants to measure (default fp32,int8; --quick: fp32)",
    )
    p.add_argument("--no-cameras", action="store_true", help="--calibrate: sensors only")
    p.add_argument("--model-dir", type=Path, help="folder of the NanoDet-m ONNX files")
    p.add_argument("--video", type=Path, help="video for camera tests (default vtest.avi)")
    p.add_argument(
        "--validate",
        action="store_true",
        help="also run the profile (real runtime, broker, model, video) and print predicted "
        "vs measured CPU and memory",
    )
    p.add_argument("--warmup", type=float, default=15.0, help="--validate: seconds of warm-up")
    p.add_argument(
        "--measure",
        type=float,
        default=60.0,
        help="--validate: seconds measured (default 60: a whole number of the usual 60-s "
        "windows, so that the summaries measured are those of a steady state)",
    )
    p.add_argument("--json", type=Path, help="also write the answer (and check) as JSON")
    p.set_defaults(func=cmd_size)


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that the stress tests stop what they started."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def cmd_size(args: argparse.Namespace) -> int:
    _stop_on_sigterm()
    path: Path = args.calibration or default_calibration_path()
    if args.calibrate:
        models = tuple(m for m in args.camera_models.split(",") if m)
        if args.quick and args.camera_models == "fp32,int8":
            models = ("fp32",)
        plan = CalibrationPlan.for_mode(quick=args.quick, camera_models=models)
        assets = None if args.no_cameras else Assets.find(args.model_dir, args.video)
        print(
            f"calibrating ({'quick' if args.quick else 'full'}): {plan.warmup:g} s warm-up + "
            f"{plan.measure:g} s measured per test"
        )
        started = time.monotonic()
        cal = calibrate(plan, assets)
        cal.save(path)
        print(f"calibration written to {path} ({time.monotonic() - started:.0f} s)")
        print(format_calibration(cal))
        if args.profile is None:
            return 0
    if args.profile is None:
        print("edge-runtime size: give a PROFILE.toml, or --calibrate")
        return 2
    profile = load_profile(args.profile)
    cal = Calibration.load(path)
    answer = size_site(profile, cal)
    print(format_answer(answer, cal))
    doc: dict[str, object] = {"answer": answer_dict(answer)}
    if args.validate:
        assets = Assets.find(args.model_dir, args.video) if profile.cameras else None
        print(
            f"\nrunning the profile: {args.warmup:g} s warm-up, {args.measure:g} s measured "
            "(real runtime, broker, model and video on this machine) ..."
        )
        measured = run_stress(profile, warmup=args.warmup, measure=args.measure, assets=assets)
        print(format_check(answer, measured))
        doc["measured"] = measured.to_dict()
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


def format_calibration(cal: Calibration) -> str:
    rows = [
        f"  idle runtime              {cal.idle_cores:.3f} cores, {cal.base_rss_mb:.0f} MiB",
        f"  per JSON message          {cal.cpu_s_per_msg * 1e6:.1f} us CPU "
        f"(broker {cal.broker_cpu_s_per_msg * 1e6:.1f} us)",
        f"  per extra SenML reading   {cal.cpu_s_per_extra_reading * 1e6:.2f} us CPU",
        f"  per extra pipeline        {cal.cpu_s_per_extra_pipeline_msg * 1e6:.1f} us CPU/msg",
        f"  per summary               {cal.cpu_s_per_summary * 1e6:.1f} us CPU",
        f"  per key                   {cal.rss_mb_per_key * 1024:.2f} KiB",
        f"  spool per summary         {cal.spool_bytes_per_summary:.0f} B "
        f"({cal.spool_bytes_per_compacted_summary:.0f} B compacted)",
        f"  uplink per summary        {cal.uplink_bytes_per_summary:.0f} B",
    ]
    rows += [
        f"  camera {c.width}x{c.height} {c.model:<5}      {c.cpu_s_per_frame * 1000:.1f} ms "
        f"CPU/frame, {c.rss_mb_per_camera:.1f} MiB/camera (at {c.fps_measured:.1f} frames/s)"
        for c in cal.cameras
    ]
    rows += [
        f"  camera pipeline {m}       {mb:.0f} MiB fixed"
        for m, mb in cal.camera_fixed_rss_mb.items()
    ]
    return "\n".join(rows)


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.1f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def format_answer(answer: SizingAnswer, cal: Calibration) -> str:
    p = answer.profile
    when = datetime.fromtimestamp(cal.created_at, UTC).strftime("%Y-%m-%d %H:%M")
    out = [
        f"site profile {p.name!r}: sized with the calibration of {cal.host} ({cal.cpus} CPUs, "
        f"{when} UTC{', quick' if cal.quick else ''})",
        f"  {'group':<12} {'runtime cores':>13} {'memory MiB':>10} {'broker cores':>12}  what",
    ]
    out += [
        f"  {line.group:<12} {line.cores:>13.3f} {line.memory_mb:>10.1f} "
        f"{line.broker_cores:>12.3f}  {line.what}"
        for line in answer.lines
    ]
    out += [
        f"  {'predicted':<12} {answer.runtime_cores:>13.3f} {answer.memory_mb:>10.1f} "
        f"{answer.broker_cores:>12.3f}  (no headroom: what the runtime and broker should use)",
        "",
        f"with {p.headroom:.0%} headroom:",
        f"  cores              {answer.cores_needed}  (runtime + site broker "
        f"{answer.runtime_cores + answer.broker_cores:.2f} cores)",
        f"  memory             {answer.memory_needed_mb:,.0f} MiB for the runtime "
        "(add the OS and the broker)",
        f"  spool disk         {_si(answer.spool_disk_needed_bytes, 'B')} to keep every "
        f"summary of a {p.outage_h:g} h outage ({answer.summaries_per_s:,.1f} summaries/s); "
        f"{_si(answer.spool_bytes_compacted * answer.factor, 'B')} if the spool may compact "
        "old summaries to 1-h windows",
        f"  uplink bandwidth   {_si(answer.uplink_needed_bps, 'bit/s')} (live "
        f"{_si(answer.uplink_live_bps, 'bit/s')} + the backlog sent within {p.drain_h:g} h "
        f"{_si(answer.uplink_drain_bps, 'bit/s')})",
    ]
    return "\n".join(out)


def _err(pred: float, meas: float) -> str:
    if meas <= 0:
        return "  n/a"
    return f"{(pred - meas) / meas:+6.1%}"


def format_check(answer: SizingAnswer, m: StressResult) -> str:
    p = answer.profile
    msgs = sum(g.msgs_per_s for g in p.sensors)
    frames = sum(g.frames_per_s for g in p.cameras)
    return "\n".join(
        [
            f"measured over {m.seconds:.0f} s: {m.msgs_per_s:,.0f} msg/s in (profile "
            f"{msgs:,.0f} sensor messages + {frames:g} frames), "
            f"{m.readings_per_s:,.0f} readings/s, {m.summaries_per_s:,.1f} summaries/s "
            f"(predicted {answer.summaries_per_s:,.1f}), {m.frames_per_s:.1f} frames/s analysed "
            f"of {m.frames_in_per_s:.1f} arrived (profile {frames:g}), "
            f"{m.ingest_dropped} dropped at ingest",
            f"  {'':<16} {'predicted':>10} {'measured':>10} {'error':>7}",
            f"  {'runtime cores':<16} {answer.runtime_cores:>10.3f} {m.runtime_cores:>10.3f} "
            f"{_err(answer.runtime_cores, m.runtime_cores)}",
            f"  {'broker cores':<16} {answer.broker_cores:>10.3f} {m.broker_cores:>10.3f} "
            f"{_err(answer.broker_cores, m.broker_cores)}",
            f"  {'runtime MiB':<16} {answer.memory_mb:>10.1f} {m.rss_mb:>10.1f} "
            f"{_err(answer.memory_mb, m.rss_mb)}  (RSS mean; peak {m.rss_peak_mb:.1f})",
        ]
    )


def answer_dict(a: SizingAnswer) -> dict[str, object]:
    return {
        "profile": a.profile.model_dump(),
        "runtime_cores": a.runtime_cores,
        "broker_cores": a.broker_cores,
        "memory_mb": a.memory_mb,
        "cores_needed": a.cores_needed,
        "memory_needed_mb": a.memory_needed_mb,
        "spool_disk_needed_bytes": a.spool_disk_needed_bytes,
        "spool_bytes_compacted": a.spool_bytes_compacted,
        "uplink_needed_bps": a.uplink_needed_bps,
        "summaries_per_s": a.summaries_per_s,
        "lines": [line.__dict__ for line in a.lines],
    }
