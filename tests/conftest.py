"""Fixtures shared by all tests (implementations in tests/support.py)."""

from tests.support import core_broker, nats_server, site_broker, unique

__all__ = ["core_broker", "nats_server", "site_broker", "unique"]
