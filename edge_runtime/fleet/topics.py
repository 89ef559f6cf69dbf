"""Fleet topics on the core broker.

=======================================  ==============  ==========================================
topic                                    publisher       what
=======================================  ==============  ==========================================
``edge/fleet/group/<group>/bundle``      operator        a signed bundle for a group (retained);
                                                         the core rolls it out in waves
``edge/fleet/group/<group>/rollback``    operator        a signed request to roll a group back
``edge/fleet/site/<site>/desired``       core            the bundle one site is to run (retained);
                                                         the operator's signed bytes, unchanged
``edge/<site>/heartbeat``                site            the site's signed heartbeat
=======================================  ==============  ==========================================
"""

from __future__ import annotations

__all__ = [
    "GROUP_BUNDLES",
    "GROUP_ROLLBACKS",
    "HEARTBEATS",
    "bundle_topic",
    "desired_topic",
    "heartbeat_topic",
    "rollback_topic",
]

GROUP_BUNDLES = "edge/fleet/group/+/bundle"
GROUP_ROLLBACKS = "edge/fleet/group/+/rollback"
HEARTBEATS = "edge/+/heartbeat"


def bundle_topic(group: str) -> str:
    return f"edge/fleet/group/{group}/bundle"


def rollback_topic(group: str) -> str:
    return f"edge/fleet/group/{group}/rollback"


def desired_topic(site: str) -> str:
    return f"edge/fleet/site/{site}/desired"


def heartbeat_topic(site: str) -> str:
    return f"edge/{site}/heartbeat"
