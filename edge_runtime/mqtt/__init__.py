"""MQTT links; the only package that imports an MQTT client library."""

from edge_runtime.mqtt.connection import LinkState, MessageSink, MqttLink, backoff_delays

__all__ = ["LinkState", "MessageSink", "MqttLink", "backoff_delays"]
