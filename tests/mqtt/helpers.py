"""Helpers of the link tests: broker configs for either transport, a collecting sink."""

from __future__ import annotations

import asyncio
from typing import Any

from edge_runtime.config import parse_config
from edge_runtime.mqtt import BrokerConfig, MqttLink
from edge_runtime.types import RawMessage

TRANSPORTS = ["aiomqtt", "gmqtt"]
PROTOCOLS = ["3.1.1", "5"]

_SITE = """
site_id = "s1"
[[pipelines]]
type = "windows"
name = "p"
topics = ["a/+"]
window = {{ kind = "tumbling", size_s = 60 }}
[site_broker]
{broker}
"""


def broker_config(
    port: int, transport: str, protocol: str = "3.1.1", **fields: Any
) -> BrokerConfig:
    """A broker config that retries fast (tests restart brokers)."""
    values: dict[str, Any] = {
        "port": port,
        "transport": transport,
        "protocol": protocol,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
        "connect_timeout_s": 5.0,
    }
    values.update(fields)
    return BrokerConfig.model_validate(values)


def loaded_broker(toml: str) -> BrokerConfig:
    """A site broker config read through the loader (so that its password is resolved)."""
    return parse_config(_SITE.format(broker=toml), source="<test>").site.site_broker


class Inbox:
    """A sink that keeps every message; ``wait_for(n)`` until n have come."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []
        self._changed = asyncio.Event()

    def __call__(self, message: RawMessage) -> None:
        self.messages.append(message)
        self._changed.set()

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]

    async def wait_for(self, count: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()


async def connected(*links: MqttLink, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        for link in links:
            await link.wait_connected()


async def until(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
