"""The image a containerised runtime runs from, as ``containers/build`` recorded it.

The build writes ``/etc/edge-runtime/image.json`` into each image: the project version, a
digest over the installed app tree, the build time and which image it is (``site``,
``site-video``, ``core``). ``/status`` shows it under ``"image"``; outside a container there
is none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

__all__ = ["IMAGE_INFO_ENV", "IMAGE_INFO_PATH", "image_info"]

IMAGE_INFO_ENV = "EDGE_RUNTIME_IMAGE_INFO"
IMAGE_INFO_PATH = Path("/etc/edge-runtime/image.json")


def image_info(path: Path | None = None) -> dict[str, Any] | None:
    """The image info file (``path``, else ``$EDGE_RUNTIME_IMAGE_INFO``, else
    ``/etc/edge-runtime/image.json``) as a dict; None when absent, unreadable or not a JSON
    object: a runtime outside a container has no image."""
    if path is None:
        path = Path(os.environ.get(IMAGE_INFO_ENV) or IMAGE_INFO_PATH)
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
