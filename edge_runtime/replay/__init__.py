"""Recordings of MQTT traffic: record, replay, and importers of real data sets.

A recording is another message source for the same pipelines, never a second code path:
:func:`replay_to_broker` publishes it to a broker, :class:`ReplaySource` feeds it straight into
a :class:`~edge_runtime.runtime.SiteRuntime` (``SiteRuntime(loaded, source=ReplaySource(path))``)
with the runtime's clock following the recording.  The file format is described in
``docs/recording-format.md``; ``edge-runtime record / replay / import / recording info`` come
from :mod:`edge_runtime.replay.cli`.
"""

from edge_runtime.replay.format import (
    RecordingError,
    RecordingHeader,
    RecordingInfo,
    RecordingReader,
    RecordingWriter,
    Tail,
    is_recording,
)
from edge_runtime.replay.importers import AklImport, VideoImport, import_akl, import_video
from edge_runtime.replay.player import (
    ReplayProgress,
    ReplayResult,
    ReplaySource,
    TimeShift,
    replay_to_broker,
    timeline,
)
from edge_runtime.replay.recorder import RecordProgress, RecordResult, record

__all__ = [
    "AklImport",
    "RecordProgress",
    "RecordResult",
    "RecordingError",
    "RecordingHeader",
    "RecordingInfo",
    "RecordingReader",
    "RecordingWriter",
    "ReplayProgress",
    "ReplayResult",
    "ReplaySource",
    "Tail",
    "TimeShift",
    "VideoImport",
    "import_akl",
    "import_video",
    "is_recording",
    "record",
    "replay_to_broker",
    "timeline",
]
