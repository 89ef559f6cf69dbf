"""The test CA of the link tests (tests/mqtt) serves the broker entry-point tests too."""

from tests.mqtt.conftest import certificates

__all__ = ["certificates"]
