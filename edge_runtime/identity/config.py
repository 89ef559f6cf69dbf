"""A site's ``[identity]`` table."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IdentityConfig"]


class IdentityConfig(BaseModel):
    """The site's identity: signed uplink messages, signed acknowledgements from the core."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: Path = Field(
        description="The site's identity directory, as 'edge-runtime provision' wrote it (mount "
        "it as a secret). Every uplink message is then signed with the site's key, and an "
        "acknowledgement from the core is taken only with a valid signature of the core's key. "
        "Its identity.json must name this site_id. Relative paths are resolved against the "
        "config file's folder.",
    )
