"""Uplink: envelopes and the sender that hands them to the core broker."""

from edge_runtime.uplink.envelope import (
    Encoding,
    Envelope,
    decode_envelopes,
    encode_envelopes,
    envelope_id,
)

__all__ = ["Encoding", "Envelope", "decode_envelopes", "encode_envelopes", "envelope_id"]
