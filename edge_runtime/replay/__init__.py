"""Recordings of MQTT traffic: record, replay, and importers of real data sets.

A recording is another message source for the same pipelines, never a second code path:
:func:`replay_to_broker` publishes it to a broker, :class:`ReplaySource` feeds it straight into
a :class:`~edge_runtime.runtime.SiteRuntime` (``SiteRuntime(loaded, source=ReplaySource(path))``)
with the runtime's clock following the recording.  The file format is described in
``docs/recording-format.md``; ``edge-runtime record / replay / import / recording info`` come
from :mod:`edge_runtime.replay.cli`.

Modules, in the order data meets them::

    header     magic, framing constants, RecordingError, RecordingHeader
    writer     RecordingWriter: buffered, append-only, checksummed records
    reader     RecordingReader, Tail, RecordingInfo, is_recording
    format     the three above in one import
    recorder   record: a live broker's traffic to a file
    importers  import_akl, import_video: real data sets to a file
    timeline   the replayed timeline, its pacing and read-ahead, ReplayProgress
    player     replay_to_broker
    source     ReplaySource: a recording as a site runtime's message source
    cli        one module per command group
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
from edge_runtime.replay.player import ReplayResult, replay_to_broker
from edge_runtime.replay.recorder import RecordProgress, RecordResult, record
from edge_runtime.replay.source import ReplaySource
from edge_runtime.replay.timeline import ReplayProgress, TimeShift, timeline

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
