"""Decode and batch: payload decoders (JSON, msgpack, SenML) that turn a micro-batch of raw
messages into one ReadingBatch of numpy arrays, and the decode spec that configures them."""

from edge_runtime.decode.decoders import ReadingDecoder
from edge_runtime.decode.spec import DecodeSpec, PayloadFormat, TimeUnit

__all__ = ["DecodeSpec", "PayloadFormat", "ReadingDecoder", "TimeUnit"]
