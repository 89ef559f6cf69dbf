"""The peer comparison's feed: one-reading JSON messages over many keys, paced, and the same
feed as numpy arrays for the reference computation.

    python bench/peers/feed.py --port 1883 --messages 300000 --keys 100 --rate 10000 --t0 T

Message ``i`` goes to ``bench/feed/k{i % keys}`` as ``{"value": v_i, "ts": t0 + i / rate}``
(QoS 1), sent at wall time ``t0 + i / rate`` (the publisher sleeps to keep to that schedule, so
event time is the time of sending). Values are drawn from a seeded generator, so the
reference (:func:`feed_arrays`) recomputes the exact feed without reading it back. After the
feed, one sentinel message far ahead in event time (key ``sentinel``) closes every window.
The publisher prints one JSON line: messages sent, how far behind schedule it fell at most.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import numpy.typing as npt

TOPIC = "bench/feed/{key}"
FILTER = "bench/feed/+"
SENTINEL_KEY = "sentinel"
SEED = 20241205


def feed_arrays(
    n: int, keys: int, rate: float, t0: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(key index, value, event time) of every message of the feed."""
    i = np.arange(n, dtype=np.int64)
    values = np.round(np.random.default_rng(SEED).normal(20.0, 5.0, n), 3)
    return i % keys, values, t0 + i / rate


def sentinel_time(n: int, rate: float, t0: float) -> float:
    return t0 + n / rate + 5.0


def publish(port: int, n: int, keys: int, rate: float, t0: float) -> dict[str, float]:
    import orjson  # noqa: PLC0415
    import paho.mqtt.client as paho  # noqa: PLC0415

    key_idx, values, times = feed_arrays(n, keys, rate, t0)
    topics = [TOPIC.format(key=f"k{k}") for k in range(keys)]
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id="bench-feed", protocol=paho.MQTTv311
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    max_lag = 0.0
    chunk = max(1, int(rate // 200))  # sleep every 5 ms of schedule
    info = None
    kl, vl, tl = key_idx.tolist(), values.tolist(), times.tolist()
    for start in range(0, n, chunk):
        ahead = tl[start] - time.time()
        if ahead > 0:
            time.sleep(ahead)
        else:
            max_lag = max(max_lag, -ahead)
        for j in range(start, min(n, start + chunk)):
            info = client.publish(topics[kl[j]], orjson.dumps({"value": vl[j], "ts": tl[j]}), qos=1)
    if info is not None:
        info.wait_for_publish(120)
    last = client.publish(
        TOPIC.format(key=SENTINEL_KEY),
        orjson.dumps({"value": 0.0, "ts": sentinel_time(n, rate, t0)}),
        qos=1,
    )
    last.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()
    return {"sent": n, "max_lag_s": max_lag, "finished_at": time.time()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--t0", type=float, required=True, help="wall time of message 0")
    args = parser.parse_args()
    print(json.dumps(publish(args.port, args.messages, args.keys, args.rate, args.t0)))


if __name__ == "__main__":
    main()
