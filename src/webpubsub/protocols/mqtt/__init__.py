"""MQTT 3.1.1 and 5.0 as a pure Sans-I/O codec: ``Parser`` (bytes in, packets out), ``encode``.

Our own codec rather than a library's: amqtt's and hbmqtt's codecs read from asyncio
streams (not Sans-I/O) and speak 3.1.1 only; paho-mqtt and gmqtt build and parse packets
inside their client classes; no maintained pure codec covers both 3.1.1 and 5.0.
"""

from __future__ import annotations

from .packets import (
    V5,
    V311,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
    publish_parts,
)
from .parser import Parser
from .wire import NO_PROPERTIES, MqttError, Properties, Reason

__all__ = [
    "NO_PROPERTIES",
    "V5",
    "V311",
    "ConnAck",
    "Connect",
    "Disconnect",
    "MqttError",
    "Packet",
    "Parser",
    "PingReq",
    "PingResp",
    "Properties",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "Reason",
    "SubAck",
    "Subscribe",
    "Subscription",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "encode",
    "publish_parts",
]
