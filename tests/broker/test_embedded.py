"""The embedded broker: a real broker while ``async with`` lasts, gone afterwards."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiomqtt
import pytest

from edge_runtime.broker import EmbeddedBroker


async def test_serves_while_open_and_stops_on_close(tmp_path: Path, unique: str) -> None:
    broker = EmbeddedBroker(workdir=tmp_path)
    async with broker:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe(f"{unique}/#", qos=1)
            await client.publish(f"{unique}/x", b"hello", qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiter(client.messages))
        assert message.payload == b"hello"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(socket.create_connection, ("127.0.0.1", broker.port), 2)
    await broker.close()  # closing twice is harmless
