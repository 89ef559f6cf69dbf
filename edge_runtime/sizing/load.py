"""Load generators for the stress tests: sensor messages and camera frames published to the
site broker from their own processes (spawned, so that they do not share the runtime's GIL).

Sensors: group ``g`` publishes ``count x msg_per_s`` messages per second round-robin over its
sensors, to ``size/g{g}/s{j}``: a one-reading JSON object ``{"value", "ts"}``, or a SenML pack
of ``readings_per_msg`` records naming ``keys_per_sensor`` series. Cameras: each camera of a
group publishes ``fps`` JPEG frames per second (msgpack ``{"ts", "jpeg"}``, QoS 0) to
``size/cam/g{g}c{i}``, cycling through frames of a real video resized to the group's size.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CameraLoad", "SensorLoad", "camera_topic", "sensor_filter", "start_load"]


def sensor_filter(group: int) -> str:
    return f"size/g{group}/+"


def camera_topic(group: int, camera: int) -> str:
    return f"size/cam/g{group}c{camera}"


@dataclass(frozen=True)
class SensorLoad:
    group: int
    count: int
    msg_per_s: float
    senml: bool
    readings_per_msg: int
    keys_per_sensor: int


@dataclass(frozen=True)
class CameraLoad:
    group: int
    count: int
    fps: float
    frames_file: str  # the group's JPEG frames, a msgpack list of bytes


def _payload(load: SensorLoad, sensor: int, now: float, rng: random.Random) -> bytes:
    import orjson  # noqa: PLC0415 (a spawned process imports what it needs)

    if not load.senml:
        return orjson.dumps({"value": round(rng.gauss(20.0, 5.0), 3), "ts": now})
    records: list[dict[str, Any]] = [
        {"bn": f"s{sensor}/", "bt": now, "n": "r0", "v": round(rng.gauss(20.0, 5.0), 3)}
    ]
    records += [
        {"n": f"r{j % load.keys_per_sensor}", "v": round(rng.gauss(20.0, 5.0), 3), "t": j * 0.001}
        for j in range(1, load.readings_per_msg)
    ]
    return orjson.dumps(records)


def _run(
    port: int, sensors: list[SensorLoad], cameras: list[CameraLoad], duration: float, go: Any
) -> None:
    import msgpack  # noqa: PLC0415
    import paho.mqtt.client as paho  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    frames = {c.group: msgpack.unpackb(Path(c.frames_file).read_bytes()) for c in cameras}
    rng = random.Random(7)
    go.wait()
    began = time.time()
    sent = {s.group: 0 for s in sensors}
    ticks = {c.group: 0 for c in cameras}
    while True:
        now = time.time()
        elapsed = now - began
        if elapsed >= duration:
            break
        for s in sensors:
            due = int(elapsed * s.count * s.msg_per_s)
            for k in range(sent[s.group], due):
                sensor = k % s.count
                client.publish(f"size/g{s.group}/s{sensor}", _payload(s, sensor, now, rng), qos=1)
            sent[s.group] = max(sent[s.group], due)
        for c in cameras:
            due = int(elapsed * c.fps) + 1
            jpegs = frames[c.group]
            for tick in range(ticks[c.group], due):
                for cam in range(c.count):
                    jpeg = jpegs[(tick + cam * 7) % len(jpegs)]
                    payload = msgpack.packb({"ts": now, "jpeg": jpeg})
                    client.publish(camera_topic(c.group, cam), payload, qos=0)
            ticks[c.group] = max(ticks[c.group], due)
        time.sleep(0.005)
    client.loop_stop()
    client.disconnect()


def start_load(
    port: int, sensors: list[SensorLoad], cameras: list[CameraLoad], duration: float
) -> tuple[mp.process.BaseProcess, Any]:
    """A publisher process that starts once the returned event is set and stops after
    ``duration`` seconds."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    proc = ctx.Process(
        target=_run, args=(port, sensors, cameras, duration, go), name="sizing-load", daemon=True
    )
    proc.start()
    return proc, go
