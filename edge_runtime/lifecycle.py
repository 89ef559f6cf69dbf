"""Long-lived components: ``async with component:`` starts it and closes it, written once.

A subclass implements :meth:`Component.start` (open files, start its named tasks) and
:meth:`Component.close` (stop them, release what it holds; safe to call twice). Leaving the
``async with`` block closes the component whatever happened inside it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Component"]


class Component:
    async def start(self) -> None:
        """Acquire what the component needs; the default does nothing."""

    async def close(self) -> None:
        """Release it; the default does nothing."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
