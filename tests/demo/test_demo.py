"""The one-command demo runs to the end in its short mode and loses nothing across the outage."""

from __future__ import annotations

import re
import subprocess
import sys


def test_short_demo_reports_zero_lost_summaries() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "demo", "--short", "--no-dashboard"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "uplink cut: core broker stopped" in out
    assert "uplink restored" in out
    assert re.search(r"lost across the \d+ s outage\s+0\s", out), out
    # the demo's daily windows still open at the stop go into the checkpoint, not the uplink
    assert re.search(r"windows open at the stop\s+\d+\s+\(kept in the checkpoint", out), out
    assert "sequence gaps at the core: none" in out
    accepted = int(re.search(r"summaries accepted \(spool\)\s+([\d,]+)", out)[1].replace(",", ""))
    stored = int(re.search(r"summaries stored at core\s+([\d,]+)", out)[1].replace(",", ""))
    offered, analysed, skipped = (
        int(n.replace(",", ""))
        for n in re.search(
            r"camera frames offered\s+([\d,]+)\s+\(([\d,]+) analysed, ([\d,]+) skipped", out
        ).groups()
    )
    readings = int(re.search(r"readings processed\s+([\d,]+)", out)[1].replace(",", ""))
    assert accepted == stored > 0
    assert offered == 150  # --short: the first 150 frames of the clip
    assert analysed > 0 and analysed + skipped <= offered
    assert re.search(r"objects tracked per class\s+person \d+", out), out
    assert readings == 5040  # 10 days x 24 hours x 21 sensors, nulls included
    assert "CC BY 4.0" in out  # the data's attribution is shown
    assert "PETS 2009" in out
