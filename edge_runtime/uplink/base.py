"""What the runtime needs from an uplink; the in-memory and the spooled uplinks provide it."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from edge_runtime.types import RawMessage, Summary

__all__ = ["Uplink"]


class Uplink(AbstractAsyncContextManager["Uplink", None], Protocol):
    """Takes summaries from the pipelines and gets them to the core.

    An async context manager, e.g. a :class:`~edge_runtime.lifecycle.Component` (the spooled
    uplink opens its file there). ``submit`` returns once the summaries are *accepted*: for the
    spooled uplink that means on disk; it raises :class:`~edge_runtime.errors.UplinkRefusedError`
    when it refuses them (counted by reason). ``run`` sends until cancelled; ``drain`` is the
    shutdown step. ``receive`` takes what arrives on the uplink link's subscriptions (the core's
    acknowledgements); ``ready`` says whether summaries are getting through ("connected and
    acknowledgements flowing"), with the reason, for ``/readyz``; ``revise`` gives it the
    site's config hash and revision id after a reload.
    """

    async def submit(self, summaries: Sequence[Summary], *, replayed: bool = False) -> None: ...

    def revise(self, config_hash: str, site_revision: str) -> None:
        """The site now runs another config (a reload): envelopes of summaries accepted from
        now on carry this config hash and revision id."""
        ...

    async def run(self) -> None: ...

    async def drain(self, timeout: float) -> int: ...

    def receive(self, message: RawMessage) -> None: ...

    def ready(self) -> tuple[bool, str]: ...

    def stats(self) -> dict[str, Any]: ...
