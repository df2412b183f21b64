"""A Sans-I/O MQTT stream parser: feed bytes in any chunks, get whole packets out.

MQTT over WebSocket is a byte stream: packets need not line up with frames (MQTT.js in
Node writes one frame per field), and one frame may hold several packets (MQTT 5.0 6.0).
"""

from __future__ import annotations

from .packets import CONNECT, V5, Connect, Packet, decode
from .wire import MqttError, Reason, malformed

DEFAULT_MAX_PACKET_SIZE = 1024 * 1024 + 64 * 1024  # a 1 MiB payload plus room for headers


class Parser:
    """Bytes in through ``feed``, packets out; ``version`` is learnt from CONNECT.

    A server-side parser starts with ``version=None`` and takes the level of the first
    CONNECT. After an ``MqttError`` the stream is unusable (the connection must close).
    """

    def __init__(
        self, version: int | None = None, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    ) -> None:
        self.version = version
        self.max_packet_size = max_packet_size
        self._buffer = bytearray()
        # An error found after complete packets of the same feed: they are returned first,
        # and the error is raised by the next call (the stream ends there).
        self.error: MqttError | None = None

    def feed(self, data: bytes) -> list[Packet]:
        """The packets completed by ``data``, in order.

        Raises:
            MqttError: a malformed packet (0x81), one over ``max_packet_size`` (0x95), a
                protocol level the service does not speak (0x84).
        """
        if self.error is not None:
            raise self.error
        self._buffer += data
        packets: list[Packet] = []
        while True:
            try:
                packet = self._next()
            except MqttError as exc:
                if not packets:
                    raise
                self.error = exc
                return packets
            if packet is None:
                return packets
            packets.append(packet)

    def _next(self) -> Packet | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        length = 0
        for i in range(1, 5):
            if i >= len(buf):
                return None
            byte = buf[i]
            length |= (byte & 0x7F) << (7 * (i - 1))
            if not byte & 0x80:
                header_size = i + 1
                break
        else:
            raise malformed("remaining length longer than 4 bytes")
        total = header_size + length
        if total > self.max_packet_size:
            raise MqttError(Reason.PACKET_TOO_LARGE, f"packet of {total} bytes is too large")
        if len(buf) < total:
            return None
        first = buf[0]
        body = bytes(buf[header_size:total])
        del buf[:total]
        packet = decode(first, body, self.version or V5)
        if first >> 4 == CONNECT and isinstance(packet, Connect) and self.version is None:
            self.version = packet.protocol_level
        return packet
