"""What the core checks of an uplink message before it stores or acknowledges anything.

With a site registry (``registry`` in the core config), a sealed message (see
:mod:`edge_runtime.identity.sealed`) is taken only when

* its signer is a registered site (``unknown_site``) and the signature verifies against that
  site's public key (``bad_signature``);
* it is fresh: signed no longer than ``replay_window_s`` ago and no more than
  ``max_clock_skew_s`` ahead of the core's clock (``stale``), and its signing time has not
  been seen from that site within the window (``replayed``);
* every envelope in it names the signer as its site (``wrong_site``).

An unsealed message is refused (``unsigned``) when signatures are required. Whatever the
registry, an envelope whose sequence number lies more than ``max_seq_ahead`` beyond the
highest the core has seen from its site is refused with its message (``seq_too_far``): one
forged number cannot fill the gap accounting with a billion missing summaries.

Each refusal raises :class:`~edge_runtime.errors.DecodeError` with the reason; the receiver
counts it as ``rejected_<reason>`` and neither stores nor acknowledges the message. The seen
signing times live in memory: after a restart a message replayed within the window is taken,
and its envelopes count as duplicates (the store knows their ids).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

from edge_runtime.core.config import CoreConfig
from edge_runtime.core.progress import SiteProgress
from edge_runtime.core.store import covered_seqs
from edge_runtime.errors import DecodeError
from edge_runtime.identity import SiteRegistry, is_sealed, open_sealed
from edge_runtime.types import Envelope
from edge_runtime.uplink.envelope import decode_envelopes

__all__ = ["REJECT_REASONS", "UplinkVerifier"]

REJECT_REASONS = (
    "unsigned",
    "malformed_sealed",
    "wrong_kind",
    "unknown_site",
    "bad_signature",
    "stale",
    "replayed",
    "wrong_site",
    "seq_too_far",
)


class UplinkVerifier:
    """Turns an uplink message into envelopes, or refuses it (see the module docstring)."""

    def __init__(self, config: CoreConfig, registry: SiteRegistry | None) -> None:
        self.registry = registry
        self.require_signed = config.signatures_required
        self.max_seq_ahead = config.max_seq_ahead
        self.window_us = int(config.replay_window_s * 1e6)
        self.skew_us = int(config.max_clock_skew_s * 1e6)
        # per site: signing times seen within the window, oldest first, and as a set
        self._seen: dict[str, tuple[collections.deque[int], set[int]]] = {}

    def envelopes(
        self, payload: bytes, sites: Mapping[str, SiteProgress], now: float
    ) -> tuple[list[Envelope], str | None]:
        """The message's envelopes and its verified signer (None: unsigned)."""
        signer: str | None = None
        if self.registry is not None and is_sealed(payload):
            signer, payload = self._open(payload, now)
        elif self.require_signed:
            raise DecodeError("unsigned", "the core requires signed uplink messages")
        envelopes = decode_envelopes(payload)
        for env in envelopes:
            if signer is not None and env.site != signer:
                raise DecodeError(
                    "wrong_site", f"site {signer!r} signed an envelope of site {env.site!r}"
                )
            progress = sites.get(env.site)
            highest = progress.max_seq if progress is not None else 0
            top = max(covered_seqs(env), default=env.seq)
            if top > highest + self.max_seq_ahead:
                raise DecodeError(
                    "seq_too_far",
                    f"site {env.site!r} seq {top} is more than max_seq_ahead="
                    f"{self.max_seq_ahead} beyond the highest seen ({highest})",
                )
        return envelopes, signer

    def _open(self, payload: bytes, now: float) -> tuple[str, bytes]:
        assert self.registry is not None
        sealed = open_sealed(payload, "uplink")
        key = self.registry.public_key(sealed.site)
        if key is None:
            raise DecodeError("unknown_site", f"site {sealed.site!r} is not in the registry")
        sealed.verify(key)
        now_us = int(now * 1e6)
        if not now_us - self.window_us <= sealed.ts <= now_us + self.skew_us:
            raise DecodeError(
                "stale",
                f"signed {(now_us - sealed.ts) / 1e6:.1f} s ago (outside the replay window)",
            )
        order, seen = self._seen.setdefault(sealed.site, (collections.deque(), set()))
        while order and order[0] < now_us - self.window_us:
            seen.discard(order.popleft())
        if sealed.ts in seen:
            raise DecodeError("replayed", f"site {sealed.site!r} sent this message before")
        seen.add(sealed.ts)
        order.append(sealed.ts)  # a site's times grow, so the deque stays (nearly) in order
        return sealed.site, sealed.payload
