"""MQTT topic-filter matching, cached per topic (a site sees the same topics over and over)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TopicMatcher", "filter_covers", "minimal_filters", "topic_matches"]

_CACHE_LIMIT = 65536


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT 3.1.1 section 4.7 matching of one filter against one topic name."""
    if topic.startswith("$") and not pattern.startswith("$"):
        return False
    p_levels = pattern.split("/")
    t_levels = topic.split("/")
    for i, p in enumerate(p_levels):
        if p == "#":
            return True
        if i >= len(t_levels):
            return False
        if p not in ("+", t_levels[i]):
            return False
    return len(p_levels) == len(t_levels)


class TopicMatcher:
    """Matches topics against a set of filters; remembers answers for topics seen before."""

    def __init__(self, filters: Sequence[str]) -> None:
        self.filters = tuple(filters)
        self._cache: dict[str, bool] = {}

    def matches(self, topic: str) -> bool:
        hit = self._cache.get(topic)
        if hit is None:
            hit = any(topic_matches(f, topic) for f in self.filters)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[topic] = hit
        return hit


def filter_covers(wide: str, narrow: str) -> bool:
    """True when every topic that ``narrow`` matches is also matched by ``wide``."""
    w_levels = wide.split("/")
    n_levels = narrow.split("/")
    for i, w in enumerate(w_levels):
        if w == "#":
            return True
        if i >= len(n_levels):
            return False
        n = n_levels[i]
        if n == "#" or (w != "+" and (n == "+" or w != n)):
            return False
    return len(w_levels) == len(n_levels)


def minimal_filters(filters: Sequence[str]) -> list[str]:
    """Drop filters covered by another one, so that a broker never delivers a message twice
    to us through overlapping subscriptions."""
    unique = sorted(set(filters))
    return [f for f in unique if not any(g != f and filter_covers(g, f) for g in unique)]
