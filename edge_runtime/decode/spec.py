"""Per-pipeline description of where key, value and event time come from in a payload."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DecodeSpec", "PayloadFormat", "TimeUnit"]

PayloadFormat = Literal["json", "msgpack", "senml"]
TimeUnit = Literal["s", "ms", "us", "ns"]

_SOURCE = re.compile(
    r"^(topic:-?\d+|field:[A-Za-z0-9_$@-]+(\.[A-Za-z0-9_$@-]+)*|const:.+|senml|received)$"
)


class DecodeSpec(BaseModel):
    """How one pipeline reads its payloads.

    Sources are written as short strings:

    * ``topic:N``: level N of the topic (0-based; negative counts from the end);
    * ``field:a.b``: a field of the decoded document, dotted for nesting;
    * ``const:NAME``: a fixed string;
    * ``senml``: the resolved SenML name (base name + name), for ``format = "senml"``;
    * ``received``: (time only) the time the message was received.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: PayloadFormat = Field(
        default="json",
        description="Payload encoding: 'json' (one object per message, orjson), 'msgpack' (one "
        "map per message) or 'senml' (an RFC 8428 SenML JSON pack: many readings per message).",
    )
    key: str = Field(
        default="topic:-1",
        description="Where the reading's key (sensor id) comes from: 'topic:N', 'field:path', "
        "'const:NAME' or, for SenML, 'senml' (the resolved record name).",
    )
    value: str = Field(
        default="field:value",
        description="Where the numeric value comes from: 'field:path'. For SenML the record's "
        "resolved 'v' is used and this field is ignored. null/None decodes as a missing value.",
    )
    time: str = Field(
        default="field:ts",
        description="Where the event time comes from: 'field:path', or 'received' to use the "
        "time the message was received. For SenML the resolved record time (bt + t) is used.",
    )
    time_unit: TimeUnit = Field(
        default="s",
        description="Unit of the numeric event time: seconds, ms, us or ns since the Unix epoch.",
    )
    allowed_fields: list[str] | None = Field(
        default=None,
        description="When set (json/msgpack), a document with a top-level field not in this list "
        "is rejected and counted as 'unknown_field'. Unset: extra fields are ignored.",
    )

    @field_validator("key", "value", "time")
    @classmethod
    def _check_source(cls, source: str) -> str:
        if not _SOURCE.match(source):
            raise ValueError(
                f"{source!r} is not a source; write 'topic:N', 'field:a.b', 'const:NAME' or 'senml'"
            )
        return source

    @property
    def time_scale(self) -> float:
        return {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[self.time_unit]
