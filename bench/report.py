"""One command, one report: every benchmark in one run, a Markdown table and plots.

    bench/run [--quick|--full] [--out DIR] [--only peers,ingest,spool,camera]

Runs, one after the other, each as its own process with ``--json``:

* ``peers``: bench_peers.py, the site runtime against Node-RED (and bare receive loops) on
  one feed;
* ``ingest``: bench_ingest.py, the sensor path (JSON backlog, both transports) and the SenML
  hot loop;
* ``spool``: bench_spool.py, durable append, drain, restart;
* ``camera``: bench_camera.py, ideal stage limit, naive loop, N cameras end to end.

and writes to the report folder (default ``bench/reports/<time>-<mode>/``): ``report.md``
(every figure with its baseline from the same run, the ratio, and the machine's load and steal
while it was measured), the PNGs ``cpu_per_message.png``, ``camera_fps.png`` and
``latency.png``, each bench's JSON and its printed output (``<bench>.log``).
``--quick`` takes under 5 minutes on a 2-core machine; ``--full`` about 20.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._proc import MachineSampler

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("peers", "ingest", "spool", "camera")


def argv_of(name: str, quick: bool, out: Path) -> list[str]:
    py = sys.executable
    js = ["--json", str(out / f"{name}.json")]
    if name == "peers":
        mode = (
            ["--quick", "--consumers", "edge-runtime,node-red,edge-runtime-aiomqtt,bare-gmqtt"]
            if quick
            else [
                "--full",
                "--consumers",
                "edge-runtime,node-red,edge-runtime-aiomqtt,bare-gmqtt,bare-aiomqtt,bare-paho",
            ]
        )
        return [py, "bench/bench_peers.py", *mode, *js]
    if name == "ingest":
        return [py, "bench/bench_ingest.py", *(["--quick"] if quick else []), *js]
    if name == "spool":
        return [py, "bench/bench_spool.py", *(["--quick"] if quick else []), *js]
    if name == "camera":
        return [py, "bench/bench_camera.py", *(["--quick", "--no-int8"] if quick else []), *js]
    raise SystemExit(f"unknown bench {name!r}; choose from {', '.join(BENCHES)}")


def run_bench(name: str, quick: bool, out: Path) -> dict[str, Any]:
    argv = argv_of(name, quick, out)
    print(f"== {name}: {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    with MachineSampler() as machine, (out / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            print("   " + line, end="", flush=True)
        rc = proc.wait()
    return {
        "bench": name,
        "rc": rc,
        "seconds": time.monotonic() - started,
        "machine": machine.result.to_dict(),
    }


# -- report -------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(docs: dict[str, dict[str, Any]]) -> str:
    head = (
        "| bench | figure | value | unit | baseline (same run) | baseline value | ratio | "
        "better | load 1-min (start→end) | steal % | note |\n"
        "|---|---|---:|---|---|---:|---:|---|---|---:|---|\n"
    )
    rows = []
    for name, doc in docs.items():
        for f in doc.get("figures", []):
            m = f.get("machine") or {}
            load = f"{m['load1_start']:.2f}→{m['load1_end']:.2f}" if m else "-"
            steal = f"{m['steal_pct']:.1f}" if m else "-"
            ratio = f.get("ratio")
            rows.append(
                f"| {name} | {f['label']} | {_fmt(f['value'])} | {f['unit']} | "
                f"{f.get('baseline_label', '-')} | {_fmt(f.get('baseline'))} | "
                f"{f'{ratio:.2f}x' if ratio is not None else '-'} | {f['better']} | {load} | "
                f"{steal} | {f.get('note', '')} |"
            )
    return head + "\n".join(rows) + "\n"


def peers_table(doc: dict[str, Any]) -> str:
    data = doc.get("data", {})
    summary = data.get("summary", {})
    if not summary:
        return ""
    lines = [
        f"Feed: {data['messages']:,} one-reading JSON messages over {data['keys']} keys at "
        f"{data['rate']:,.0f} msg/s (QoS 1), 1-s tumbling windows (count, sum, min, max, mean); "
        f"medians of {data['repeats']} run(s) per consumer, consumers in turn.",
        "",
        "| consumer | consumer CPU-s / 100k msgs (range) | msgs per consumer CPU-s | vs Node-RED | "
        "broker CPU-s/100k | publisher CPU-s/100k | lost | windows correct | summary latency "
        "p50 / p95 / p99 ms | max steal % |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for name, row in summary.items():
        lo, hi = row["cpu_per_100k_range"]
        lat = row.get("latency_ms") or {}
        lat_s = f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f}" if "p50" in lat else "-"
        peer = summary.get("node-red")
        ratio = row["msgs_per_cpu_s"] / peer["msgs_per_cpu_s"] if peer else None
        paired = row.get("vs_node_red_paired_range")
        if ratio is not None and paired and name != "node-red" and data["repeats"] > 1:
            ratio_s = f"{ratio:.2f}x (per repeat {paired[0]:.2f}-{paired[1]:.2f})"
        else:
            ratio_s = f"{ratio:.2f}x" if ratio else "-"
        correct = row.get("all_correct")
        lines.append(
            f"| {name} | {row['cpu_per_100k']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{row['msgs_per_cpu_s']:,.0f} | {ratio_s} | "
            f"{row['broker_cpu_per_100k']:.2f} | {row['publisher_cpu_per_100k']:.2f} | "
            f"{row['lost_messages']} | {'-' if correct is None else ('yes' if correct else 'NO')} | "
            f"{lat_s} | {row['steal_pct_max']:.1f} |"
        )
    return "\n".join(lines) + "\n"


# -- plots --------------------------------------------------------------------------------------


def plot_cpu(doc: dict[str, Any], path: Path) -> bool:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    summary = doc.get("data", {}).get("summary", {})
    if not summary:
        return False
    names = list(summary)
    consumer = [summary[n]["cpu_per_100k"] for n in names]
    lo = [summary[n]["cpu_per_100k"] - summary[n]["cpu_per_100k_range"][0] for n in names]
    hi = [summary[n]["cpu_per_100k_range"][1] - summary[n]["cpu_per_100k"] for n in names]
    broker = [summary[n]["broker_cpu_per_100k"] for n in names]
    publisher = [summary[n]["publisher_cpu_per_100k"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = range(len(names))
    w = 0.27
    ax.bar([i - w for i in x], consumer, w, yerr=[lo, hi], capsize=3, label="consumer")
    ax.bar(list(x), broker, w, label="broker (mosquitto)", alpha=0.7)
    ax.bar([i + w for i in x], publisher, w, label="publisher", alpha=0.7)
    for i, v in enumerate(consumer):
        ax.annotate(f"{v:.2f}", (i - w, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), names, rotation=15)
    ax.set_ylabel("CPU-seconds per 100,000 messages")
    data = doc["data"]
    ax.set_title(
        f"CPU per message by consumer ({data['messages']:,} msgs, {data['keys']} keys, "
        f"{data['rate']:,.0f} msg/s, 1-s windows; median, range of {data['repeats']})"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_camera(doc: dict[str, Any], path: Path) -> bool:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    data = doc.get("data", {})
    rows = [r for r in data.get("end_to_end", []) if r["max_batch"] == 2]
    if not rows:
        return False
    cams = [r["cameras"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(cams, [r["inferred_fps"] for r in rows], "o-", label="inferred (runtime, measured)")
    ax.plot(
        cams,
        [r["fps_whole_machine"] for r in rows],
        "s--",
        alpha=0.6,
        label="at the measured CPU/frame, all cores",
    )
    ax.plot(cams, [r["offered_fps"] for r in rows], "^:", label="offered (10 fps per camera)")
    ax.axhline(data["ideal_fps"], color="red", linestyle="--", label="ideal stage limit (a)")
    ax.axhline(data["naive_fps"], color="gray", linestyle=":", label="naive per-frame loop (b)")
    ax.set_xlabel("cameras")
    ax.set_ylabel("frames/s")
    ax.set_xticks(cams)
    ax.set_ylim(0, max(data["ideal_fps"] * 1.3, max(r["inferred_fps"] for r in rows) * 1.2))
    ax.set_title(f"Camera frames/s vs number of cameras ({data['cores']} cores, NanoDet-m fp32)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_latency(docs: dict[str, dict[str, Any]], path: Path) -> bool:
    import matplotlib.pyplot as plt  # noqa: PLC0415

    panels: list[tuple[str, dict[str, dict[str, float]]]] = []
    summary = docs.get("peers", {}).get("data", {}).get("summary", {})
    peers = {n: r["latency_ms"] for n, r in summary.items() if r.get("latency_ms")}
    if peers:
        panels.append(("summary latency (arrival - window end)", peers))
    cam = docs.get("camera", {}).get("data", {}).get("end_to_end", [])
    if cam:
        panels.append(
            (
                "camera frame -> result",
                {
                    f"{r['cameras']} cams b{r['max_batch']}": {
                        "p50": r["p50_ms"],
                        "p99": r["p99_ms"],
                    }
                    for r in cam
                },
            )
        )
    spool = docs.get("spool", {}).get("data", {}).get("latency_ms", {})
    if spool:
        panels.append(("spool (group commit, fsync)", spool))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.5), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        quantiles = [q for q in ("p50", "p95", "p99") if any(q in s for s in series.values())]
        names = list(series)
        w = 0.8 / len(quantiles)
        for j, q in enumerate(quantiles):
            ax.bar(
                [i + (j - (len(quantiles) - 1) / 2) * w for i in range(len(names))],
                [series[n].get(q, 0.0) for n in names],
                w,
                label=q,
            )
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_ylabel("ms")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Latency percentiles")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_report(out: Path, runs: list[dict[str, Any]], quick: bool, started: float) -> Path:
    docs: dict[str, dict[str, Any]] = {}
    for run in runs:
        path = out / f"{run['bench']}.json"
        if run["rc"] == 0 and path.exists():
            docs[run["bench"]] = json.loads(path.read_text())
    plots = {
        "cpu_per_message.png": plot_cpu(docs.get("peers", {}), out / "cpu_per_message.png"),
        "camera_fps.png": plot_camera(docs.get("camera", {}), out / "camera_fps.png"),
        "latency.png": plot_latency(docs, out / "latency.png"),
    }
    lines = [
        f"# edge-runtime benchmark report ({'quick' if quick else 'full'})",
        "",
        f"- when: {datetime.fromtimestamp(started, UTC):%Y-%m-%d %H:%M} UTC, "
        f"{time.time() - started:.0f} s in all",
        f"- commit: {git_rev()}",
        f"- machine: {os.cpu_count()} CPUs, shared with other work: the load average and the "
        "CPU steal while each figure was measured are beside it",
        "- every ratio is value / baseline, both measured in this run",
        "",
        "## Runs",
        "",
        "| bench | exit | seconds | load 1-min (start→end) | busy % | steal % |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for run in runs:
        m = run["machine"]
        lines.append(
            f"| {run['bench']} | {run['rc']} | {run['seconds']:.0f} | "
            f"{m['load1_start']:.2f}→{m['load1_end']:.2f} | {m['busy_pct']:.0f} | "
            f"{m['steal_pct']:.1f} |"
        )
    lines += ["", "## Figures", "", table(docs)]
    if "peers" in docs:
        lines += ["## Peer comparison", "", peers_table(docs["peers"])]
    lines += ["## Plots", ""]
    for name, made in plots.items():
        lines.append(f"![{name}]({name})" if made else f"- {name}: no data in this run")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="under 5 minutes")
    mode.add_argument("--full", action="store_true", help="the default: larger sizes, repeats")
    parser.add_argument("--out", type=Path, help="report folder (default bench/reports/<time>)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild report.md and plots in --out"
    )
    args = parser.parse_args()
    quick = bool(args.quick)
    started = time.time()
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "bench" / "reports" / f"{stamp}-{'quick' if quick else 'full'}"
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in (args.only or ",".join(BENCHES)).split(",") if n]
    if args.report_only:
        runs = json.loads((out / "runs.json").read_text())
    else:
        runs = [run_bench(name, quick, out) for name in names]
        (out / "runs.json").write_text(json.dumps(runs, indent=2))
    report = write_report(out, runs, quick, started)
    print(f"\nreport: {report}")
    print(report.read_text())
    failed = [r["bench"] for r in runs if r["rc"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)} (see their .log files)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
