"""How a site's uplink is put together from its config: the durable spool and its sender (or
the in-memory uplink when store and forward is off)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edge_runtime import __version__
from edge_runtime.identity import load_identity
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.uplink.base import Uplink
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.memory import MemoryUplink
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.seq import SeqAllocator
from edge_runtime.uplink.spool import Spool, SpoolConfig
from edge_runtime.uplink.spooled import SpooledUplink

if TYPE_CHECKING:  # the runtime calls these with itself; no import at run time
    from edge_runtime.runtime.site import SiteRuntime

__all__ = ["default_uplink", "spool_config"]

log = logging.getLogger(__name__)


def spool_config(runtime: SiteRuntime) -> SpoolConfig:
    """The site's spool config, with compaction held off for as long as a pipeline may still
    correct a window (see :meth:`Pipeline.correction_horizon_s`)."""
    config = runtime.config.spool
    horizons = [slot.pipeline.correction_horizon_s() for slot in runtime.slots]
    horizon = max((h for h in horizons if h is not None), default=0.0)
    compaction = config.compaction
    if not compaction.enabled or horizon <= compaction.min_age_s:
        return config
    log.info(
        "spool: compaction.min_age_s raised from %.0f s to %.0f s: a pipeline may still "
        "correct a window that long after its end",
        compaction.min_age_s,
        horizon,
    )
    return config.model_copy(
        update={"compaction": compaction.model_copy(update={"min_age_s": horizon})}
    )


def default_uplink(runtime: SiteRuntime, link: MqttLink) -> Uplink:
    """The spooled uplink (store and forward), or the in-memory one when it is switched off."""
    cfg = runtime.config
    site_id, config_hash, clock = cfg.site_id, runtime.loaded.config_hash, runtime.clock
    identity = load_identity(cfg.identity.dir, site_id) if cfg.identity is not None else None
    sealer = identity.sealer if identity is not None else None
    if not cfg.uplink.store_and_forward:
        seq = SeqAllocator(cfg.data_dir / "seq.state")
        return MemoryUplink(
            cfg.uplink,
            link,
            site_id=site_id,
            version=__version__,
            config_hash=config_hash,
            seq=seq,
            clock=clock,
            sealer=sealer,
            site_revision=runtime.revision.id,
        )
    up = cfg.uplink
    spool = Spool(spool_config(runtime), data_dir=cfg.data_dir, clock=runtime.clock)
    sender = Sender(
        spool,
        link,
        SenderConfig(
            topic=up.topic.format(site_id=cfg.site_id),
            encoding=up.encoding,
            max_batch_bytes=up.max_batch_bytes,
            max_batch_records=up.max_batch,
            max_in_flight=up.max_in_flight,
            live_window_s=up.live_window_s,
            backlog_rate_per_s=up.backlog_rate_per_s,
            publish_timeout_s=up.publish_timeout_s,
            delivery=up.delivery,
            ack_timeout_s=up.ack_timeout_s,
            max_unacked=up.max_unacked,
        ),
        clock=runtime.clock,
        link_generation=lambda: link.connects,
        sealer=sealer,
    )
    acks = up.ack_subscriptions(site_id)
    return SpooledUplink(
        spool,
        sender,
        link=link,
        site_id=site_id,
        version=__version__,
        config_hash=config_hash,
        clock=clock,
        ack_topic=acks[0] if acks else None,
        identity=identity,
        site_revision=runtime.revision.id,
    )
