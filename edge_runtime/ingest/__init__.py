"""Ingest: the MQTT transport, payload decoders and the bounded ingest queue."""

from edge_runtime.ingest.decode_spec import DecodeSpec, PayloadFormat, TimeUnit
from edge_runtime.ingest.decoders import ReadingDecoder

__all__ = ["DecodeSpec", "PayloadFormat", "ReadingDecoder", "TimeUnit"]
