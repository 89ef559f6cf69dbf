"""Load generators for the benchmarks: run in their own process so they do not share our GIL."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import orjson
import paho.mqtt.client as paho


def _publish(port: int, topic_fmt: str, n: int, keys: int, qos: int, t0: float, start: Any) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start.wait()
    infos = []
    for i in range(n):
        payload = orjson.dumps({"value": float(i % 97), "ts": t0 + i * 0.001})
        infos.append(client.publish(topic_fmt.format(key=f"k{i % keys}"), payload, qos=qos))
        if i % 5000 == 4999:
            infos[-1].wait_for_publish(30)
    infos[-1].wait_for_publish(60)
    client.loop_stop()
    client.disconnect()


def start_publisher(
    port: int, topic_fmt: str, n: int, *, keys: int = 16, qos: int = 0, t0: float = 1.7e9
) -> tuple[mp.process.BaseProcess, Any]:
    """A publisher process that waits for ``event.set()`` and then publishes ``n`` messages."""
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    proc = ctx.Process(target=_publish, args=(port, topic_fmt, n, keys, qos, t0, start))
    proc.start()
    time.sleep(0.05)
    return proc, start


def senml_pack(base: str, t0: float, n: int, offset: int) -> bytes:
    records: list[dict[str, Any]] = [{"bn": base, "bt": t0, "n": "r0", "v": float(offset % 13)}]
    records += [
        {"n": f"r{j % 8}", "v": float((offset + j) % 101), "t": j * 0.01} for j in range(1, n)
    ]
    return orjson.dumps(records)
