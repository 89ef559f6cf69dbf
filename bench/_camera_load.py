"""Camera load for bench_camera: a publisher process sending JPEG frames over MQTT.

It runs in its own (spawned) process so that it does not share the runtime's GIL; it still
shares the two cores, as a real site's cameras would not, and the benchmark says so.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import time
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as paho


def _publish(
    port: int,
    frames_file: str,
    cameras: int,
    fps: float,
    duration: float,
    start: Any,
    result: Any,
) -> None:
    jpegs: list[bytes] = pickle.loads(Path(frames_file).read_bytes())
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start.wait()
    began = time.monotonic()
    sent = 0
    sent_bytes = 0
    tick = 0
    n = len(jpegs)
    stride = n // max(cameras, 1)
    while True:
        due = began + tick / fps
        if due - began >= duration:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        for cam in range(cameras):
            jpeg = jpegs[(tick + cam * stride) % n]
            payload = msgpack.packb({"ts": now, "jpeg": jpeg})
            client.publish(f"bench/cams/c{cam}/jpeg", payload, qos=0)
            sent += 1
            sent_bytes += len(payload)
        tick += 1
    time.sleep(0.2)
    client.loop_stop()
    client.disconnect()
    result.put((sent, sent_bytes, time.monotonic() - began))


def start_camera_publisher(
    port: int, frames_file: Path, *, cameras: int, fps: float, duration: float
) -> tuple[mp.process.BaseProcess, Any, Any]:
    """A process that, once ``go.set()``, publishes ``cameras`` x ``fps`` frames per second for
    ``duration`` seconds (each camera starts at a different point of the clip); it puts
    ``(frames, bytes, seconds)`` on the returned queue when done."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    result = ctx.Queue()
    proc = ctx.Process(
        target=_publish,
        args=(port, str(frames_file), cameras, fps, duration, go, result),
        name="camera-publisher",
    )
    proc.start()
    return proc, go, result
