"""A component's enter and exit: ``async with`` starts it and closes it whatever happens."""

from __future__ import annotations

import pytest

from edge_runtime.lifecycle import Component


class Recorder(Component):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def close(self) -> None:
        self.calls.append("close")


async def test_async_with_starts_and_closes() -> None:
    async with Recorder() as component:
        assert component.calls == ["start"]
    assert component.calls == ["start", "close"]


async def test_an_error_inside_still_closes_and_propagates() -> None:
    component = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        async with component:
            raise RuntimeError("boom")
    assert component.calls == ["start", "close"]


async def test_defaults_do_nothing() -> None:
    async with Component() as component:
        assert isinstance(component, Component)
