"""A bare receive loop (gmqtt, aiomqtt or paho) for the peer comparison: subscribes to the feed
at QoS 1, counts messages until it has ``--messages`` of them, then prints one JSON line with
its own CPU (process_time) at subscription and at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time


async def run_gmqtt(port: int, client_id: str, n: int) -> dict[str, float]:
    import gmqtt  # noqa: PLC0415

    done = asyncio.Event()
    count = 0
    report: dict[str, float] = {}

    def on_message(client: object, topic: str, payload: bytes, qos: int, props: object) -> int:
        nonlocal count
        count += 1
        if count >= n:
            report["done_at"] = time.time()
            report["cpu_done"] = time.process_time()
            done.set()
        return 0

    client = gmqtt.Client(client_id, clean_session=True)
    client.on_message = on_message
    await client.connect("127.0.0.1", port, version=gmqtt.constants.MQTTv311)
    client.subscribe("bench/feed/+", qos=1)
    report["cpu_ready"] = time.process_time()
    await done.wait()
    await client.disconnect()
    return report | {"received": count}


async def run_aiomqtt(port: int, client_id: str, n: int) -> dict[str, float]:
    import aiomqtt  # noqa: PLC0415

    report: dict[str, float] = {}
    count = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id) as client:
        await client.subscribe("bench/feed/+", qos=1)
        report["cpu_ready"] = time.process_time()
        async for _ in client.messages:
            count += 1
            if count >= n:
                break
        report["done_at"] = time.time()
        report["cpu_done"] = time.process_time()
    return report | {"received": count}


def run_paho(port: int, client_id: str, n: int) -> dict[str, float]:
    import paho.mqtt.client as paho  # noqa: PLC0415

    done = threading.Event()
    count = 0
    report: dict[str, float] = {}

    def on_message(client: object, userdata: object, message: object) -> None:
        nonlocal count
        count += 1
        if count >= n:
            report["done_at"] = time.time()
            report["cpu_done"] = time.process_time()
            done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe("bench/feed/+", qos=1)
    client.loop_start()
    report["cpu_ready"] = time.process_time()
    done.wait()
    client.loop_stop()
    client.disconnect()
    return report | {"received": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", choices=["gmqtt", "aiomqtt", "paho"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--messages", type=int, required=True)
    args = parser.parse_args()
    if args.lib == "paho":
        report = run_paho(args.port, args.client_id, args.messages)
    else:
        runner = run_gmqtt if args.lib == "gmqtt" else run_aiomqtt
        report = asyncio.run(runner(args.port, args.client_id, args.messages))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
