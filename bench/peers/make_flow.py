"""Writes flow.json (the Node-RED flow of the peer comparison) from windows.js and
windows-init.js, the function node's code kept as plain JavaScript files.

    python bench/peers/make_flow.py      # after editing windows.js or windows-init.js

bench/bench_peers.py refuses to run a flow.json that is out of date with them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def build_flow() -> list[dict[str, Any]]:
    broker = {
        "id": "bench-broker",
        "type": "mqtt-broker",
        "name": "bench broker",
        "broker": "127.0.0.1",
        "port": "${BENCH_MQTT_PORT}",
        "clientid": "${BENCH_CLIENT_ID}",
        "autoConnect": True,
        "usetls": False,
        "protocolVersion": "4",
        "keepalive": "60",
        "cleansession": True,
        "autoUnsubscribe": True,
        "birthTopic": "",
        "birthQos": "0",
        "birthPayload": "",
        "birthMsg": {},
        "closeTopic": "",
        "closeQos": "0",
        "closePayload": "",
        "closeMsg": {},
        "willTopic": "",
        "willQos": "0",
        "willPayload": "",
        "willMsg": {},
        "userProps": "",
        "sessionExpiry": "",
    }
    return [
        {"id": "bench-tab", "type": "tab", "label": "peer comparison: 1-s windows per key"},
        broker,
        {
            "id": "bench-in",
            "type": "mqtt in",
            "z": "bench-tab",
            "name": "feed",
            "topic": "bench/feed/+",
            "qos": "1",
            "datatype": "json",
            "broker": "bench-broker",
            "nl": False,
            "rap": True,
            "rh": 0,
            "inputs": 0,
            "x": 110,
            "y": 80,
            "wires": [["bench-windows"]],
        },
        {
            "id": "bench-windows",
            "type": "function",
            "z": "bench-tab",
            "name": "1-s tumbling windows per key",
            "func": (HERE / "windows.js").read_text(),
            "initialize": (HERE / "windows-init.js").read_text(),
            "finalize": "",
            "outputs": 1,
            "timeout": 0,
            "noerr": 0,
            "libs": [],
            "x": 330,
            "y": 80,
            "wires": [["bench-out"]],
        },
        {
            "id": "bench-out",
            "type": "mqtt out",
            "z": "bench-tab",
            "name": "summaries",
            "topic": "",
            "qos": "1",
            "retain": "false",
            "respTopic": "",
            "contentType": "",
            "userProps": "",
            "correl": "",
            "expiry": "",
            "broker": "bench-broker",
            "x": 560,
            "y": 80,
            "wires": [],
        },
    ]


def render() -> str:
    return json.dumps(build_flow(), indent=2) + "\n"


if __name__ == "__main__":
    (HERE / "flow.json").write_text(render())
