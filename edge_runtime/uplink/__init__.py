"""The uplink: a summary leaves the pipelines in an envelope, is kept in the durable spool, and
the sender drains the spool to the core broker.

envelope   the wire format (msgpack or JSON lists of :class:`~edge_runtime.types.Envelope`)
spool      the durable store-and-forward spool (SQLite)
sender     drains the spool to the core broker over the MQTT link
resend     the sender's book of records the core has not acknowledged: delete or send again
spooled    the site's uplink: spool + sender; memory: the in-memory one (no spool)
"""

from edge_runtime.types import Envelope, envelope_id
from edge_runtime.uplink.config import SenderConfig, UplinkConfig
from edge_runtime.uplink.envelope import Encoding, decode_envelopes, encode_envelopes
from edge_runtime.uplink.sender import Publisher, Sender, SenderStats

__all__ = [
    "Encoding",
    "Envelope",
    "Publisher",
    "Sender",
    "SenderConfig",
    "SenderStats",
    "UplinkConfig",
    "decode_envelopes",
    "encode_envelopes",
    "envelope_id",
]
