"""The sensor-only site image has neither OpenCV nor onnxruntime: the runtime and its command
line must start without them (the camera pipeline imports them when a config uses it)."""

from __future__ import annotations

import subprocess
import sys


def test_the_runtime_and_cli_import_no_video_library() -> None:
    code = (
        "import sys, edge_runtime.cli.main, edge_runtime.runtime.site, edge_runtime.core; "
        "print(','.join(m for m in ('cv2', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"imported at start: {out.stdout.strip()}"
