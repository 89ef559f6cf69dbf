"""The MQTT link: the one package that imports an MQTT client library. The site broker's
sources, the uplink to the core broker and the core receiver all connect through it."""

from edge_runtime.mqtt.config import BrokerConfig, TLSConfig
from edge_runtime.mqtt.link import LinkState, MessageSink, MqttLink

__all__ = ["BrokerConfig", "LinkState", "MessageSink", "MqttLink", "TLSConfig"]
