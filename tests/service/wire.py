"""What clients put on the wire, for tests that must see it rather than trust a setting.

- ``BrokerEnd`` is the broker's end of one MQTT connection: a listening socket on a free port that
  reads the CONNECT and SUBSCRIBE packets a real paho client sends (MQTT 3.1.1 §3.1 and §3.8, MQTT 5
  §3.1 and §3.8, properties §2.2.2) and answers CONNACK, so the client calls its ``on_connect`` as it
  would with a broker. It runs on the test's thread: paho writes without a network thread when none
  runs (``Client.loop`` reads and writes), and the kernel keeps what was written until it is read.
- ``WireClient`` is the paho client the production ``client_factory`` built, given this class after
  construction: it notes what the collector asks of it (``connect_async``'s address, ``loop_start``)
  and connects to a ``BrokerEnd`` instead of the configured broker.
- ``SilentModbus`` is a Modbus TCP endpoint that accepts connections, counts the requests it receives
  per unit (MBAP header, Modbus Messaging on TCP/IP Implementation Guide V1.0b §3.1.3) and never
  answers, as a dead unit behind a gateway.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

CONNECT, CONNACK, SUBSCRIBE = 1, 2, 8

# MQTT 5 property identifiers (§2.2.2.2) → (name, the _Reader method that decodes its value).
_PROPERTIES: dict[int, tuple[str, str]] = {
    0x11: ("session_expiry_interval", "u32"),
    0x21: ("receive_maximum", "u16"),
    0x27: ("maximum_packet_size", "u32"),
    0x22: ("topic_alias_maximum", "u16"),
    0x19: ("request_response_information", "u8"),
    0x17: ("request_problem_information", "u8"),
    0x26: ("user_property", "pair"),
    0x15: ("authentication_method", "text"),
    0x16: ("authentication_data", "binary"),
    0x0B: ("subscription_identifier", "varint"),
}


class _Reader:
    """Reads the fields of one packet's body."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.body):
            raise ValueError(f"packet ends after {len(self.body)} bytes, {self.at + n} needed")
        out = self.body[self.at : self.at + n]
        self.at += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def binary(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        return self.binary().decode("utf-8")

    @property
    def left(self) -> bool:
        return self.at < len(self.body)

    def properties(self) -> dict[str, Any]:
        end = self.varint() + self.at
        out: dict[str, Any] = {}
        while self.at < end:
            ident = self.varint()
            if ident not in _PROPERTIES:
                raise ValueError(f"MQTT 5 property 0x{ident:02x} is not known to this test helper")
            name, kind = _PROPERTIES[ident]
            out[name] = getattr(self, kind)()
        return out

    def pair(self) -> tuple[str, str]:
        return self.text(), self.text()


@dataclass(frozen=True)
class Connect:
    """What a client told the broker when it connected."""

    protocol: str  # "3.1.1" (level 4) or "5"
    clean: bool  # MQTT 3.1.1 clean session / MQTT 5 clean start
    keepalive: int
    client_id: str
    username: str | None
    password: bytes | None
    properties: dict[str, Any]


@dataclass(frozen=True)
class Subscribe:
    """One SUBSCRIBE: the topic filters and the maximum QoS asked for each."""

    filters: tuple[tuple[str, int], ...]


def _parse_connect(body: bytes) -> Connect:
    r = _Reader(body)
    name, level = r.text(), r.u8()
    if name != "MQTT" or level not in (4, 5):
        raise ValueError(f"not an MQTT 3.1.1 or 5 CONNECT (protocol {name!r} level {level})")
    flags, keepalive = r.u8(), r.u16()
    properties = r.properties() if level == 5 else {}
    client_id = r.text()
    if flags & 0x04:
        raise ValueError("a will message: not expected of Bafang's client")
    username = r.text() if flags & 0x80 else None
    password = r.binary() if flags & 0x40 else None
    return Connect(
        protocol="5" if level == 5 else "3.1.1",
        clean=bool(flags & 0x02),
        keepalive=keepalive,
        client_id=client_id,
        username=username,
        password=password,
        properties=properties,
    )


def _parse_subscribe(body: bytes, protocol: str) -> Subscribe:
    r = _Reader(body)
    r.u16()  # packet identifier
    if protocol == "5":
        r.properties()
    filters: list[tuple[str, int]] = []
    while r.left:
        topic = r.text()
        filters.append((topic, r.u8() & 0x03))
    return Subscribe(tuple(filters))


class BrokerEnd:
    """The broker's end of one MQTT connection, on a free loopback port (see the module docstring)."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.settimeout(2.0)
        self.address: tuple[str, int] = self._listener.getsockname()
        self._conn: socket.socket | None = None

    def _recv(self, n: int) -> bytes:
        assert self._conn is not None
        out = b""
        while len(out) < n:
            chunk = self._conn.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the client closed the connection")
            out += chunk
        return out

    def packet(self) -> tuple[int, bytes]:
        """The next packet the client sent: its type and body."""
        if self._conn is None:
            self._conn, _ = self._listener.accept()
            self._conn.settimeout(2.0)
        head = self._recv(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._recv(1)[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        return head >> 4, self._recv(length)

    def expect(self, kind: int) -> bytes:
        """The body of the next packet, which must be of this type."""
        got, body = self.packet()
        if got != kind:
            raise AssertionError(f"expected MQTT packet type {kind}, the client sent type {got}")
        return body

    def connack(self, protocol: str) -> None:
        """Accept the connection (session not present, success; MQTT 5: no properties)."""
        assert self._conn is not None
        self._conn.sendall(bytes([CONNACK << 4, 3, 0, 0, 0] if protocol == "5" else [CONNACK << 4, 2, 0, 0]))

    def send(self, data: bytes) -> None:
        """Write raw bytes to the client, as a broker (or a broken one) would."""
        assert self._conn is not None
        self._conn.sendall(data)

    def close(self) -> None:
        """Close both sockets."""
        if self._conn is not None:
            self._conn.close()
        self._listener.close()


class WireClient(paho.Client):
    """A production-built paho client that connects to a ``BrokerEnd`` instead of the broker asked for."""

    asked: tuple[str, int] | None
    end: BrokerEnd

    @classmethod
    def adopt(cls, client: paho.Client, end: BrokerEnd) -> WireClient:
        """Give a client built elsewhere this class, keeping everything it was configured with."""
        client.__class__ = cls
        assert isinstance(client, WireClient)
        client.asked, client.end = None, end
        return client

    def connect_async(
        self,
        host: str,
        port: int = 1883,
        keepalive: int = 60,
        bind_address: str = "",
        bind_port: int = 0,
        clean_start: Any = paho.MQTT_CLEAN_START_FIRST_ONLY,
        properties: Any = None,
    ) -> None:
        """Note the broker the collector asked for; connect to the broker end instead."""
        self.asked = (host, port)
        host, port = self.end.address
        super().connect_async(host, port, keepalive, bind_address, bind_port, clean_start, properties)

    async def handshake(self) -> tuple[Connect, Subscribe]:
        """Answer the collector's connection as a broker would (CONNACK), and read what it subscribes.

        The collector connects and writes from its event loop (the test's): the broker end reads on a
        worker thread meanwhile.
        """
        connect = _parse_connect(await asyncio.to_thread(self.end.expect, CONNECT))
        self.end.connack(connect.protocol)
        return connect, _parse_subscribe(
            await asyncio.to_thread(self.end.expect, SUBSCRIBE), connect.protocol
        )


class SilentModbus:
    """A Modbus TCP endpoint that counts requests per unit and never answers."""

    def __init__(self) -> None:
        self.requests: Counter[int] = Counter()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readexactly(7)  # transaction, protocol, length, unit
                _, _, length, unit = struct.unpack(">HHHB", head)
                await reader.readexactly(length - 1)
                self.requests[unit] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def stop(self) -> None:
        """Close the connections and stop listening."""
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
