"""The MQTT collector: subscribes to the configured topics and hands decoded readings to the sink.

MQTT pushes to us, so this is a service input: paho-mqtt's client calls ``handle`` for every message
and the sink (thread-safe) takes what it decodes. The client runs on an asyncio event loop through
paho's external-loop interface (its socket read and written from the loop's selector, keepalive from a
timer, reconnection with backoff here): in the service that is the service's own loop, so the MQTT
client, the pipeline and the rules share one thread and never hand the interpreter lock to each other
per message (measured: handing it between paho's own thread and the loop cost a fifth of the drain
rate); a caller without a running loop (a tool, a test) gets a loop of the collector's own, in a thread. QoS 1 with a persistent session (MQTT 3.1.1
``clean_session=False``, MQTT 5 ``clean_start=False`` plus a session expiry) and a stable client id
mean that neither a broker restart (with persistence) nor ours loses a message. Subscriptions are made
in ``on_connect`` so every reconnect resubscribes, whatever the broker remembered.

Acknowledgement is manual: a QoS 1 message goes to ``sink.submit`` with an ``ack`` that sends its
PUBACK once the sink has stored what it carried, so a crash at any moment leaves every message not yet
stored with the broker, which delivers it again (same packet id) on the next connection. Messages
with nothing to store (availability, topics no device owns, retained values we skip) are acknowledged
at once. At most ``receive_maximum`` messages wait for their ack: MQTT 5 tells the broker so in
CONNECT, and with either protocol the collector stops reading the socket when the window is full
(TCP back-pressure), so a backlog waits in the broker, not in our memory.

What a topic flood or a sensor with a wrong clock can do is bounded: a wildcard entry stands for at
most its ``max_devices`` device ids (the first heard, or those the runtime says were heard before), and
a payload time further ahead than ``max_clock_skew`` or older than the retention is rejected
(``bad_time``), so it can neither freeze a series as "latest" nor empty the rolling windows. Rejections
are logged on the edges of a streak, never once per message.

The paho client comes from ``client_factory`` (as Modbus clients do, collectors/modbus.py), so tests
hand the collector a client of their own instead of reaching into paho's private attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import ssl
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.clock import Clock, SystemClock
from core.config import MqttBroker, MqttDevice, MqttPoint
from core.metrics import METRICS
from core.types import Delivery, DeviceStatus, Reading, Reason, Rejection, Sink
from core.validate import Check, mqtt_check

log = logging.getLogger("bafang.collectors.mqtt")

_MISSING = object()
_decode_json = json.JSONDecoder().decode
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # as core.config.Identifier
_MAX_SESSION_EXPIRY = 0xFFFFFFFF  # MQTT 5: a four-byte integer; this value means "never expires"
_TOPIC_CACHE_LIMIT = 10_000  # wildcard topics resolved to a route, beyond the devices' own; bounds floods
_CAP_LOG_INTERVAL = 3600.0  # seconds between the lines counting messages refused by a full wildcard entry
_FAILURE_LOG_INTERVAL = 60.0  # seconds between tracebacks of a handler bug that recurs message after message
# Epoch numbers above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
_EPOCH_MS_THRESHOLD = 1e11
RECONNECT_MIN, RECONNECT_MAX = 1.0, 60.0  # seconds between connection attempts, doubling
_PACKETS_PER_WAKE = 1000  # packets read in one go from the socket's buffer before the loop runs others
_BARRIER_TIMEOUT = 2.0  # seconds stop() waits for the broker to confirm the last acks

# What a message gave: readings and rejections for the sink, or None when there is nothing to store.
_Outcome = tuple[list[Reading], list[Rejection] | None] | None


@dataclass(frozen=True, slots=True)
class _Point:
    point: MqttPoint
    check: Check  # core.validate.mqtt_check of the point
    metric: str
    unit: str
    key: str | None  # a single-level path: one dict lookup on the hot path
    path: tuple[str, ...] | None  # a dotted path of two or more levels; None with key None = payload


@dataclass(slots=True, eq=False)
class _Members:
    """The device ids one wildcard entry stands for: at most ``limit``, those heard first.

    Every per-device structure of the collector (online state, streaks, resolved topics) holds only
    ids admitted here, so they are bounded by the sum of the entries' max_devices.
    """

    entry: MqttDevice
    limit: int
    ids: set[str]
    refused: int = 0  # messages from further ids since the last line logged about them
    logged_at: float | None = None  # clock time of that line; None until the cap is first hit


@dataclass(frozen=True, slots=True)
class _Route:
    """A configured device's data topic, compiled for the per-message path."""

    device: MqttDevice
    filter: str
    levels: tuple[str, ...]
    segment: int | None  # topic level holding the device id (wildcard templates)
    members: _Members | None  # with segment: the ids this entry stands for
    points: tuple[_Point, ...]
    time_path: tuple[str, ...] | None
    bare_text: bool  # every point takes the whole payload through a map: unquoted words are values


@dataclass(frozen=True, slots=True)
class _Availability:
    device: MqttDevice
    filter: str
    levels: tuple[str, ...]
    segment: int | None
    members: _Members | None  # with segment: the same ids as the entry's data topic
    online: str
    offline: str


class _Ack:
    """The acknowledgement handed to the sink with one QoS >= 1 message; effective once."""

    __slots__ = ("_collector", "_done", "_generation", "_mid", "_qos")

    def __init__(self, collector: MqttCollector, mid: int, qos: int, generation: int) -> None:
        self._collector = collector
        self._mid = mid
        self._qos = qos
        self._generation = generation
        self._done = False

    def __call__(self) -> None:
        self._collector._acked(self, send=True)

    def __repr__(self) -> str:
        return f"<ack mid {self._mid} qos {self._qos}{' done' if self._done else ''}>"


def _delivery(msg: paho.MQTTMessage, topic: str) -> Delivery:
    """Which message this is: the broker resends a message with its packet id (and DUP set), so the
    id and a digest of the topic's UTF-8 bytes (the bytes on the wire, MQTT 3.1.1 §1.5.3, MQTT 5 §1.5.4)
    and the payload recognise it (store/timeseries.py)."""
    # CRC-32 of topic and payload: a check, not a fingerprint, beside the packet id and the recency the
    # store requires (a false match needs the same recent packet id with the same CRC).
    return Delivery(msg.mid, zlib.crc32(msg.payload, zlib.crc32(topic.encode())), bool(msg.dup))


def _topic_of(msg: paho.MQTTMessage) -> str:
    """A message's topic for a log line, even when it is not UTF-8."""
    try:
        return msg.topic
    except UnicodeDecodeError:
        return "(a topic that is not UTF-8)"


def _iso_utc(t: float) -> str:
    """Epoch seconds as ISO 8601 in UTC, for details a person reads."""
    try:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{t:.0f} s after the epoch"


def _duration(seconds: float) -> str:
    """A limit in the unit a person thinks of it."""
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g} days"
    return f"{seconds:g} s"


class _BufferedSocket:
    """A TCP socket read 64 KiB at a time.

    paho reads a packet in (at least) three ``recv`` calls: the type byte, the length bytes, the rest.
    For 100-byte messages that is three system calls a message; from a buffer it is one every few
    hundred. ``pending`` tells paho (and the collector) that buffered bytes wait without the socket
    being readable (paho asks it of TLS sockets for the same reason).
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes: from the buffer, refilled from the socket when it is empty."""
        if self._pos >= len(self._buf):
            data: bytes = self._sock.recv(65536)
            if not data:
                return data
            self._buf, self._pos = data, 0
        end = self._pos + n
        out = self._buf[self._pos : end]
        self._pos = end
        return out

    def pending(self) -> int:
        """Bytes read from the socket and not yet taken."""
        return len(self._buf) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Received(paho.MQTTMessage):
    """A received message whose ``info`` (a publish's tracker, with a lock and a condition that
    nothing reads for a received message) is made only if asked for."""

    __slots__ = ("_info",)
    _info: paho.MQTTMessageInfo

    def __init__(self, mid: int, topic: bytes) -> None:  # paho's, without making ``info``
        self.timestamp = 0.0
        self.state = paho.mqtt_ms_invalid
        self.dup = False
        self.mid = mid
        self._topic = topic
        self.payload = b""
        self.qos = 0
        self.retain = False
        self.properties = None

    @property
    def info(self) -> paho.MQTTMessageInfo:
        """paho's publish tracker for this message id, as on paho's own messages."""
        try:
            return self._info
        except AttributeError:
            self._info = paho.MQTTMessageInfo(self.mid)
            return self._info

    @info.setter
    def info(self, value: paho.MQTTMessageInfo) -> None:
        self._info = value


class _Client(paho.Client):
    """paho's client with its plain TCP socket buffered (``_BufferedSocket``) and a short way for the
    common PUBLISH.

    ``_create_socket`` and ``_handle_publish`` are paho's own (paho-mqtt 2.x, pinned below 3 in
    pyproject.toml; tests check both are still there and that the short way hands over what paho's
    does). ``_create_socket`` is the one place that knows the socket before paho uses it; TLS sockets
    buffer themselves and are left alone.

    ``_handle_publish``: a QoS 0 or 1 PUBLISH without MQTT 5 properties (what sensors and gateways
    send, and all Bafang reads) is decoded here and handed to ``on_message``. paho's own way builds an
    MQTT 5 ``Properties`` object for every message (two dicts of 27 entries, a walk over them to clear
    it) and a publish tracker with a lock and a condition, garbage for the collector every time:
    draining 100-byte messages (benchmarks/ingest.py, drain_msg) the service's CPU per message fell
    from 83–97 µs to 43–47 µs without them. Everything else — QoS 2, properties present, a
    malformed packet, paho's debug log or ``on_log`` in use, filtered callbacks — goes paho's way.
    """

    _filtered = False  # message_callback_add was used: paho dispatches

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        return sock if self._ssl or self._transport != "tcp" else _BufferedSocket(sock)

    def message_callback_add(self, sub: str, callback: Any) -> None:
        """paho's, and from now on paho dispatches every message (topic filters are its job)."""
        self._filtered = True
        super().message_callback_add(sub, callback)

    def _handle_publish(self) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        on_message = self.on_message
        if (
            qos == 2
            or on_message is None
            or self._filtered
            or self.on_log is not None
            or (self._logger is not None and self._logger.isEnabledFor(logging.DEBUG))
        ):
            return super()._handle_publish()
        # MQTT 3.1.1 §3.3.2, MQTT 5 §3.3.2: topic (length-prefixed), packet id if QoS > 0, then in
        # MQTT 5 the properties' length (a variable byte integer: 0 is one byte 0x00), then the payload.
        end = 2 + int.from_bytes(packet[0:2], "big")
        pos = end + 2 if qos else end
        mqtt5 = self._protocol == paho.MQTTv5
        if len(packet) < pos + mqtt5 or end == 2 or (mqtt5 and packet[pos] != 0):
            return super()._handle_publish()  # an empty topic, properties, or too short: paho's way
        message = _Received(int.from_bytes(packet[end:pos], "big") if qos else 0, bytes(packet[2:end]))
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[pos + mqtt5 :])
        message.timestamp = paho.time_func()
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(paho.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise
        if qos and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def default_client_factory(broker: MqttBroker, *, protocol: MQTTProtocolVersion, tls: bool) -> paho.Client:
    """The paho client for a broker: MQTT 5 or 3.1.1 with a persistent session, manual acks, credentials, TLS.

    ``MqttCollector`` calls its ``client_factory`` with these arguments and then sets its own callbacks,
    reconnect backoff and manual acknowledgement on what it gets.
    """
    # manual_ack: paho sends no PUBACK after on_message; `_Ack` sends it once the sink has stored it.
    if protocol == MQTTProtocolVersion.MQTTv5:
        # The session outlives the connection through clean_start=False and an expiry, set at connect.
        client = _Client(
            CallbackAPIVersion.VERSION2, client_id=broker.client_id, protocol=protocol, manual_ack=True
        )
    else:
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=broker.client_id,
            clean_session=False,
            protocol=protocol,
            manual_ack=True,
        )
    if broker.username is not None:
        client.username_pw_set(
            broker.username, broker.password.get_secret_value() if broker.password else None
        )
    if tls:
        cfg = broker.tls
        client.tls_set(
            ca_certs=cfg.ca_file if cfg else None,
            certfile=cfg.cert_file if cfg else None,
            keyfile=cfg.key_file if cfg else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if cfg is not None and cfg.insecure:
            client.tls_insecure_set(True)
    return client


def _split_path(path: str | None) -> tuple[str, ...] | None:
    return None if path is None else tuple(path.split("."))


def _is_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def _matches(levels: tuple[str, ...], topic: list[str]) -> bool:
    """MQTT filter matching on pre-split levels (`+` one level, `#` the rest, none for `$` topics)."""
    if topic and topic[0].startswith("$") and levels and levels[0] in ("+", "#"):
        return False
    n = len(topic)
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= n:
            return False
        if level != "+" and level != topic[i]:
            return False
    return len(levels) == n


def parse_time(value: object, tz: tzinfo = UTC) -> float | None:
    """Epoch seconds of a payload timestamp (ISO 8601, epoch s or ms), or None if unreadable.

    ISO 8601 strings without an offset are read in ``tz``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        t = float(value)
        if not math.isfinite(t) or t <= 0:
            return None
        return t / 1000.0 if t > _EPOCH_MS_THRESHOLD else t
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_time(float(text), tz) if text.replace(".", "", 1).isdigit() else _iso(text, tz)
        except (ValueError, OverflowError):
            return None
    return None


def _iso(text: str, tz: tzinfo) -> float:
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=tz)
    return stamp.timestamp()


class MqttCollector:
    """Subscribes to the devices' topics on one broker and hands readings to the sink."""

    def __init__(
        self,
        broker: MqttBroker,
        devices: Sequence[MqttDevice],
        sink: Sink,
        *,
        clock: Clock | None = None,
        host: str | None = None,
        port: int | None = None,
        timezone: str | None = None,
        client_factory: Callable[..., paho.Client] | None = None,
        max_clock_skew: float | None = None,
        max_age: float | None = None,
        known_devices: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """Compile the devices' topics and build the paho client (nothing connects before ``start``).

        ``client_factory(broker, protocol=..., tls=...)`` builds the paho client (default
        ``default_client_factory``). A payload time more than ``max_clock_skew`` seconds ahead of the
        clock (default ``broker.max_clock_skew``) or more than ``max_age`` seconds old (the retention;
        None: no limit) is rejected as ``bad_time``. ``known_devices`` maps a wildcard entry's id to the
        device ids it stood for before a restart: they keep their places within its ``max_devices``.
        """
        self._broker = broker
        self._sink = sink
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._tz: tzinfo = ZoneInfo(timezone) if timezone else UTC
        self._max_skew = broker.max_clock_skew if max_clock_skew is None else max_clock_skew
        self._max_age_or_inf = math.inf if max_age is None else max_age  # one comparison per message
        self._host, self._port, self._tls = self._address(broker, host, port)
        # amqtt, the embedded broker, speaks MQTT 3.1.1 only.
        self._v5 = broker.protocol == "5" and broker.url != "embedded"
        # amqtt flags the QoS 1 messages it queued for our session as retained (against the spec):
        # there a retained flag does not mean old, and its retained store lives no longer than we do.
        self._filter_retained = broker.url != "embedded"
        self._where = f"{broker.client_id}@{self._host}:{self._port}"

        self._exact: dict[str, _Route] = {}
        self._wild: list[_Route] = []
        self._avail_exact: dict[str, _Availability] = {}
        self._avail_wild: list[_Availability] = []
        self._on_retain: dict[str, _Route | None] = {}  # device id → what a retained message may give
        self._members: dict[str, _Members] = {}  # wildcard entry id → the device ids it stands for
        for device in devices:
            self._compile(device)
        self.remember(known_devices or {})
        # topic → (route, device id); filled on the first message of a wildcard topic from an admitted
        # device. Room for every admitted device's topic, plus a margin for topics no device owns.
        self._resolved: dict[str, tuple[_Route, str] | None] = {}
        self._cache_limit = _TOPIC_CACHE_LIMIT + sum(m.limit for m in self._members.values())
        # Devices whose online state we reported, to call sink.status only on edges.
        self._online: dict[str, bool] = {}
        # Device id → the millisecond its last arrival-stamped message was given (stamps never repeat).
        self._stamps: dict[str, int] = {}
        # (device, metric) → [reason, count] while values are being rejected: log once per streak.
        self._streaks: dict[tuple[str, str | None], list[Any]] = {}
        # paho calls handle() on the client's loop; the lock covers the caches another thread may touch.
        self._lock = threading.Lock()
        # A handler bug that recurs on every message: its traceback at most once a minute, with a count.
        self._failures = 0
        self._failure_logged_at = -math.inf

        # The in-flight window: messages handed to the sink whose ack has not come back. The lock guards
        # the count and the generation (acks may come from another thread than the loop's).
        self._window_lock = threading.Lock()  # taken bare on the per-message path: a C-level enter
        self._inflight = 0
        self._max_inflight = broker.receive_maximum
        # Resume reading at three quarters: one wake-up per stored batch, not one per ack.
        self._low_water = broker.receive_maximum - max(1, broker.receive_maximum // 4)
        self._paused = False  # the window is full: the socket is not read (loop thread only)
        # Bumped on every disconnect and connect. An ack from an older connection is not sent: the broker
        # has already delivered that message again on the new one (same packet id, its own ack), and a
        # late PUBACK there could acknowledge a different message that reuses the id.
        self._generation = 0
        # stop() waits for the UNSUBACK of this filter (never subscribed) to know the broker has our acks.
        self._barrier_topic = f"bafang/ack-barrier/{broker.client_id}"
        self._barrier: asyncio.Event | None = None  # created on the loop

        # The event loop the client runs on (set by start), its thread, the socket paho uses now, and
        # the tasks: connection (with reconnection) and paho's periodic work (keepalive).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._own_thread: threading.Thread | None = None
        self._sock: Any = None
        self._task: asyncio.Task[None] | None = None
        self._gone: asyncio.Event | None = None  # set when the socket closes
        self._closing = False

        self._connected = False
        self._sub_mid = -1
        self._ever_connected = False
        self._stopping = False
        self._failing = False
        self._client = self._make_client(client_factory or default_client_factory)

    # -------------------------------------------------------------------------------------------
    # Set-up

    @staticmethod
    def _address(broker: MqttBroker, host: str | None, port: int | None) -> tuple[str, int, bool]:
        tls = broker.tls is not None
        url_host: str | None = None
        url_port: int | None = None
        if broker.url != "embedded":
            parts = urlsplit(broker.url)
            tls = tls or parts.scheme == "mqtts"
            url_host, url_port = parts.hostname, parts.port
        final_host = host or url_host
        if final_host is None:
            raise ValueError("mqtt: url is 'embedded': the embedded broker's host and port must be given")
        final_port = port or url_port or (8883 if tls else 1883)
        return final_host, final_port, tls

    def _compile(self, device: MqttDevice) -> None:
        sub = device.mqtt
        points = tuple(
            _Point(
                point=p,
                check=mqtt_check(p),
                metric=p.metric,
                unit=p.resolved_unit,
                key=p.path if p.path is not None and "." not in p.path else None,
                path=_split_path(p.path) if p.path is not None and "." in p.path else None,
            )
            for p in device.points
        )
        members: _Members | None = None
        if sub.device_id_segment is not None:
            members = self._members[device.id] = _Members(device, sub.max_devices, set())
        route = _Route(
            device=device,
            filter=sub.topic,
            levels=tuple(sub.topic.split("/")),
            segment=sub.device_id_segment,
            members=members,
            points=points,
            time_path=_split_path(sub.time_path),
            bare_text=sub.time_path is None
            and all(p.path is None and p.map is not None for p in device.points),
        )
        # A retained message comes from the past with no time of its own: stamped now, a dead sensor's
        # last temperature would look current after every reconnect. Without a time_path only the
        # state of contacts (door, smoke, leak: binary metrics) is taken from it; a state still holds.
        if sub.time_path is None:
            states = tuple(p for p in points if METRICS[p.metric].binary)
            self._on_retain[device.id] = replace(route, points=states) if states else None
        else:
            self._on_retain[device.id] = route
        if _is_wildcard(sub.topic):
            self._wild.append(route)
        else:
            self._exact[sub.topic] = route
        if sub.availability_topic is not None:
            levels = tuple(sub.availability_topic.split("/"))
            segment = sub.device_id_segment
            if segment is not None and (segment >= len(levels) or levels[segment] != "+"):
                segment = None  # the availability topic does not carry the id at that level
            avail = _Availability(
                device,
                sub.availability_topic,
                levels,
                segment,
                members if segment is not None else None,
                sub.payload_available,
                sub.payload_not_available,
            )
            if _is_wildcard(sub.availability_topic):
                self._avail_wild.append(avail)
            else:
                self._avail_exact[sub.availability_topic] = avail

    def remember(self, known: Mapping[str, Iterable[str]]) -> None:
        """Give wildcard entries the device ids they stood for before: they keep their places."""
        for entry_id, ids in known.items():
            members = self._members.get(entry_id)
            if members is None:
                continue  # no longer a wildcard entry of this configuration: nothing to keep
            valid = [i for i in dict.fromkeys(ids) if _DEVICE_ID.match(i)]
            members.ids.update(valid[: members.limit])
            if len(valid) > members.limit:
                log.warning(
                    "mqtt entry %s (%s): %d devices known from before, more than its max_devices %d; "
                    "the first %d keep their places",
                    entry_id,
                    members.entry.mqtt.topic,
                    len(valid),
                    members.limit,
                    members.limit,
                )

    def _make_client(self, factory: Callable[..., paho.Client]) -> paho.Client:
        protocol = MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311
        client = factory(self._broker, protocol=protocol, tls=self._tls)
        # Whatever the factory did: a message is acknowledged only once stored (`_Ack`), never by paho.
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_unsubscribe = self._on_unsubscribe
        # The external-loop interface: the collector drives the socket from its event loop.
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    def _subscriptions(self) -> list[tuple[str, int]]:
        qos: int = self._broker.qos
        group = self._broker.shared_group
        data = {r.filter for r in (*self._exact.values(), *self._wild)}
        # Availability topics are not shared: every replica should know every device's state, and a
        # retained last-will is not delivered to shared subscriptions.
        avail = {a.filter for a in (*self._avail_exact.values(), *self._avail_wild)} - data
        shared = [(f"$share/{group}/{t}" if group else t, qos) for t in sorted(data)]
        return shared + [(t, qos) for t in sorted(avail)]

    # -------------------------------------------------------------------------------------------
    # Lifecycle

    @property
    def connected(self) -> bool:
        """Whether the broker session is up and our subscriptions are acknowledged."""
        return self._connected

    @property
    def inflight(self) -> int:
        """Messages handed to the sink whose ack has not come back yet."""
        return self._inflight

    @property
    def throttled(self) -> bool:
        """Whether the collector waits for acks before it reads more from the broker."""
        return self._paused

    def continue_stamps(self, latest: Mapping[str, float]) -> None:
        """Arrival stamps of a device go on after its newest stored reading (device id → epoch s).

        A backlog drained at full speed stamps a device's messages a millisecond apart, which may run
        ahead of the clock; after a restart the next stamps must still come after those.
        """
        for device, at in latest.items():
            ms = round(at * 1000)
            if ms > self._stamps.get(device, -1):
                self._stamps[device] = ms

    def set_address(self, host: str, port: int) -> None:
        """Connect to this broker address instead (the embedded broker's port is known once it listens)."""
        self._host, self._port = host, port
        self._where = f"{self._broker.client_id}@{host}:{port}"

    def start(self) -> None:
        """Connect in the background, on the running event loop (or on a loop of our own in a thread
        when none runs here); reconnect with backoff for as long as we run."""
        self._stopping = self._closing = False
        props: Properties | None = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = min(int(self._broker.session_expiry), _MAX_SESSION_EXPIRY)
            props.ReceiveMaximum = self._broker.receive_maximum
            self._client.connect_async(
                self._host, self._port, keepalive=self._broker.keepalive, clean_start=False, properties=props
            )
        else:
            self._client.connect_async(self._host, self._port, keepalive=self._broker.keepalive)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.new_event_loop()
            self._own_thread = threading.Thread(
                target=loop.run_forever, name=f"bafang-mqtt-{self._broker.client_id}", daemon=True
            )
            self._own_thread.start()
        self._loop = loop
        self._on_loop(self._begin)
        log.info(
            "mqtt %s: connecting (MQTT %s, %d topics)",
            self._where,
            "5" if self._v5 else "3.1.1",
            len(self._subscriptions()),
        )

    def _begin(self) -> None:
        assert self._loop is not None
        self._loop_thread = threading.get_ident()
        self._gone = asyncio.Event()
        self._barrier = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name=f"bafang-mqtt-{self._broker.client_id}")

    def _on_loop(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the client's loop: now when called there (or before any loop), else soon."""
        loop = self._loop
        if loop is None or self._loop_thread == threading.get_ident():
            fn()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(fn)

    def pause(self) -> None:
        """Hand nothing more to the sink; acks still go out while connected (call before a last flush).

        Messages arriving from now on are neither handed over nor acknowledged: the broker delivers
        them again on our next connection.
        """
        self._stopping = True

    async def aclose(self) -> None:
        """Stop: the last acks confirmed by the broker, then disconnect (the broker keeps our session).

        Called on the client's loop (the service's); ``stop`` does the same from any other thread.
        """
        self.pause()
        self._closing = True
        if self._connected:
            await self._flush_acks()
        if self._sock is not None and self._gone is not None:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_BARRIER_TIMEOUT):
                    await self._gone.wait()  # DISCONNECT written, the socket closed
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._connected = False

    def stop(self) -> None:
        """Stop from a thread other than the client's loop (a tool, a test); see ``aclose``."""
        loop = self._loop
        if loop is None:
            self.pause()
            return
        if self._loop_thread == threading.get_ident():
            raise RuntimeError("MqttCollector.stop() on its own event loop: await aclose() instead")
        if not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(_BARRIER_TIMEOUT * 3)
        if self._own_thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._own_thread.join(10)
            loop.close()
            self._own_thread = None
        self._loop = None

    # -------------------------------------------------------------------------------------------
    # Driving paho from the loop (paho's external-loop interface)

    async def _run(self) -> None:
        """Connect, wait for the connection to end, reconnect with backoff; until closed."""
        assert self._gone is not None
        delay = RECONNECT_MIN
        misc = asyncio.create_task(self._misc())
        try:
            while not self._closing:
                self._gone.clear()
                try:
                    # The TCP (and TLS) connect blocks: on a worker thread, never on the loop. paho's
                    # socket callbacks come back to the loop through _on_loop.
                    await asyncio.to_thread(self._client.reconnect)
                except Exception as exc:
                    self._connect_failed(f"cannot connect: {exc}")
                else:
                    await self._gone.wait()
                    if self._ever_connected and not self._failing:
                        delay = RECONNECT_MIN  # it was up: the next attempt comes soon
                if self._closing:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
        finally:
            misc.cancel()

    async def _misc(self) -> None:
        """paho's periodic work: keepalive pings, and noticing a broker that went silent."""
        while True:
            await asyncio.sleep(1.0)
            if self._sock is not None:
                self._client.loop_misc()

    def _on_socket_open(self, client: paho.Client, userdata: object, sock: Any) -> None:
        self._on_loop(lambda: self._opened(sock))

    def _opened(self, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        self._paused = False
        self._loop.add_reader(sock, self._readable)

    def _on_socket_close(self, client: paho.Client, userdata: object, sock: Any) -> None:
        self._on_loop(lambda: self._closed(sock))

    def _closed(self, sock: Any) -> None:
        assert self._loop is not None
        if sock is self._sock:
            self._sock = None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if self._gone is not None:
            self._gone.set()

    def _on_socket_register_write(self, client: paho.Client, userdata: object, sock: Any) -> None:
        self._on_loop(lambda: self._want_write(sock))

    def _want_write(self, sock: Any) -> None:
        assert self._loop is not None
        if sock is self._sock:
            self._loop.add_writer(sock, self._client.loop_write)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: object, sock: Any) -> None:
        self._on_loop(lambda: self._no_write(sock))

    def _no_write(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    def _readable(self) -> None:
        """Read what the socket (and its buffer) holds, a bounded number of packets at a time."""
        client, sock = self._client, self._sock
        pending = getattr(sock, "pending", None)
        for _ in range(_PACKETS_PER_WAKE):
            if client.loop_read() != paho.MQTT_ERR_SUCCESS or self._paused or self._sock is not sock:
                return
            if pending is None or not pending():
                return
        assert self._loop is not None
        self._loop.call_soon(self._readable)  # more buffered: after what else waits on the loop

    def _pause_reading(self) -> None:
        """The window is full: read nothing more until acks free a quarter of it (TCP holds the rest)."""
        if self._paused or self._sock is None or self._loop is None:
            return
        self._paused = True
        log.debug("mqtt %s: %d messages await storage; pausing reads", self._where, self._inflight)
        self._loop.remove_reader(self._sock)
        if self._inflight <= self._low_water:  # the acks came meanwhile (from another thread)
            self._resume_reading()

    def _resume_reading(self) -> None:
        if not self._paused or self._sock is None or self._loop is None:
            return
        self._paused = False
        self._loop.add_reader(self._sock, self._readable)
        self._loop.call_soon(self._readable)  # what the buffer already holds

    async def _flush_acks(self) -> None:
        """Wait (briefly) until the broker has processed the PUBACKs sent so far.

        paho closes the socket right after writing DISCONNECT; a message the broker sends meanwhile
        meets a closed socket, the reset that comes back makes the broker drop what it had not read yet,
        and the last acks were lost (seen with MQTT 5: acknowledged messages delivered again). The
        broker answers a client's packets in order, so an UNSUBACK for a filter we never subscribed to
        proves every earlier PUBACK arrived.
        """
        barrier = self._barrier
        if barrier is None:
            return
        barrier.clear()
        rc, _ = self._client.unsubscribe(self._barrier_topic)
        if rc != paho.MQTT_ERR_SUCCESS:
            return
        try:
            async with asyncio.timeout(_BARRIER_TIMEOUT):
                await barrier.wait()
        except TimeoutError:
            log.warning(
                "mqtt %s: broker did not confirm the last acks within %g s", self._where, _BARRIER_TIMEOUT
            )

    # -------------------------------------------------------------------------------------------
    # paho callbacks (on the client's loop): nothing may escape them

    def _on_unsubscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # The collector unsubscribes only for the barrier (the UNSUBACK may beat unsubscribe()'s return).
        if self._barrier is not None:
            self._barrier.set()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            self._new_generation()
            if reason.is_failure:
                self._connect_failed(f"refused: {reason}")
                return
            subs = self._subscriptions()
            if subs:
                # `connected` turns true on the SUBACK: only then are messages sure to reach us.
                mid = client.subscribe(subs)[1]
                self._sub_mid = -1 if mid is None else mid
            else:
                self._connected = True
            if self._failing or self._ever_connected:
                log.info("mqtt %s: reconnected (session present: %s)", self._where, flags.session_present)
            else:
                log.info("mqtt %s: connected (session present: %s)", self._where, flags.session_present)
            self._failing = False
            self._ever_connected = True
        except Exception:
            log.exception("mqtt %s: on_connect failed", self._where)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        try:
            for (topic, _qos), reason in zip(self._subscriptions(), reasons, strict=False):
                if reason.is_failure:
                    log.warning("mqtt %s: subscription to %r refused: %s", self._where, topic, reason)
            if mid == self._sub_mid:
                self._connected = True
        except Exception:
            log.exception("mqtt %s: on_subscribe failed", self._where)

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        self._connect_failed("cannot connect")

    def _connect_failed(self, why: str) -> None:
        self._connected = False
        if not self._failing:
            self._failing = True
            log.warning("mqtt %s: connection %s; retrying with backoff", self._where, why)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._new_generation()
        was = self._connected
        self._connected = False
        if self._stopping:
            return
        if was and not self._failing:
            self._failing = True
            log.warning("mqtt %s: disconnected: %s; reconnecting with backoff", self._where, reason)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if self._stopping:
            return  # paused or stopping: not handed over, not acked; the broker delivers it again
        try:
            self.handle(msg)
        except Exception:
            # A bug here must not drop the connection: paho would re-raise into its loop.
            self._handler_failed("not handled", _topic_of(msg))
        if self._inflight >= self._max_inflight:
            self._pause_reading()

    def _new_generation(self) -> None:
        with self._window_lock:
            self._generation += 1

    def _acked(self, ack: _Ack, *, send: bool) -> None:
        """An ack came back (send) or a submit failed (not send): free its slot, PUBACK if still valid.

        Any thread may call it (the pipeline acks from the loop's thread in the service); the PUBACK
        itself is queued on the client's loop, where disconnects happen too.
        """
        with self._window_lock:
            if ack._done:
                return
            ack._done = True
            self._inflight -= 1
            current = send and ack._generation == self._generation
            resume = self._paused and self._inflight <= self._low_water
        if current:
            loop = self._loop
            if loop is None or self._loop_thread == threading.get_ident():
                self._send_ack(ack._mid, ack._qos, ack._generation)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(self._send_ack, ack._mid, ack._qos, ack._generation)
        if resume:
            self._on_loop(self._resume_reading)

    def _send_ack(self, mid: int, qos: int, generation: int) -> None:
        # A PUBACK queued for an older connection is not sent: the broker delivers that message again
        # on the new one (same packet id, its own ack), and a late PUBACK there could acknowledge a
        # different message that reuses the id.
        if generation == self._generation:
            self._client.ack(mid, qos)

    # -------------------------------------------------------------------------------------------
    # Messages

    def handle(self, msg: paho.MQTTMessage) -> None:
        """Decode one message and hand it to the sink with its ack, or acknowledge it at once."""
        qos = msg.qos
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            outcome: _Outcome = None  # no device's topic is anything but UTF-8
        else:
            try:
                outcome = self._decode(msg, topic)
            except Exception:
                # A routing bug: the message cannot be attributed to a device, like one for no device.
                self._handler_failed("not routed", topic)
                outcome = None
        if outcome is None:
            if qos:
                self._client.ack(msg.mid, qos)
            return
        readings, rejections = outcome
        if not qos:
            if readings or rejections:
                self._sink.submit(readings, rejections or ())
            return
        if not readings and not rejections:
            self._client.ack(msg.mid, qos)
            return
        with self._window_lock:
            self._inflight += 1
            generation = self._generation
        ack = _Ack(self, msg.mid, qos, generation)
        try:
            self._sink.submit(readings, rejections or (), ack=ack, delivery=_delivery(msg, topic))
        except Exception:
            # Not taken: free the slot but send no PUBACK; the broker delivers it again next connection.
            self._acked(ack, send=False)
            raise

    def _handler_failed(self, what: str, topic: str) -> None:
        """Log a bug met while handling a message: its traceback at most once a minute, with a count."""
        self._failures += 1
        now = self._clock.monotonic()
        if now - self._failure_logged_at < _FAILURE_LOG_INTERVAL:
            return
        more = self._failures - 1
        since = f" ({more} more failures since the last report)" if more else ""
        log.exception("mqtt %s: message on %r %s%s", self._where, topic, what, since)
        self._failures = 0
        self._failure_logged_at = now

    def _decode(self, msg: paho.MQTTMessage, topic: str) -> _Outcome:
        """What one message gives the sink; None when there is nothing to store (ack it at once)."""
        route = self._exact.get(topic)
        if route is not None:
            device_id = route.device.id
        else:
            avail = self._avail_exact.get(topic)
            if avail is not None:
                self._availability(avail, avail.device.id, topic, msg.payload)
                return None
            resolved: tuple[_Route, str] | Rejection | None
            try:
                resolved = self._resolved[topic]
            except KeyError:
                resolved = self._resolve(topic)
            if resolved is None:
                # Availability, or a topic no device owns (a subscription an older config left in the session).
                return self._wild_availability(topic, msg.payload)
            if isinstance(resolved, Rejection):
                return [], [resolved]
            route, device_id = resolved
        retained = msg.retain and self._filter_retained
        if retained:
            on_retain = self._on_retain[route.device.id]
            if on_retain is None:
                return None
            route = on_retain
        try:
            return self._readings(route, device_id, topic, msg.payload, retained)
        except Exception as exc:
            # Whatever a payload does to the decoder, the message is accounted for and acknowledged.
            log.debug("mqtt %s: decoding %r failed", self._where, topic, exc_info=True)
            detail = f"{topic}: cannot decode {_short(msg.payload)} ({type(exc).__name__}: {exc})"
            return [], [self._reject(device_id, None, Reason.MALFORMED, detail, self._clock.now())]

    def _resolve(self, topic: str) -> tuple[_Route, str] | Rejection | None:
        """The route and device id of a wildcard topic; a rejection when its device id is not taken."""
        levels = topic.split("/")
        found: tuple[_Route, str] | None = None
        for route in self._wild:
            if _matches(route.levels, levels):
                if route.segment is None or route.members is None:
                    found = (route, route.device.id)
                else:
                    # Not cached when refused: each such message is counted.
                    refused = self._admit(route.members, levels[route.segment], topic, route.segment)
                    if refused is not None:
                        return refused
                    found = (route, levels[route.segment])
                break
        if found is None and any(_matches(a.levels, levels) for a in self._avail_wild):
            return None
        with self._lock:
            if len(self._resolved) >= self._cache_limit:
                self._resolved.clear()
            self._resolved[topic] = found
        return found

    def _admit(self, members: _Members, device_id: str, topic: str, segment: int) -> Rejection | None:
        """None when the entry stands for this device id (now or from before); else the rejection."""
        if device_id in members.ids:
            return None
        entry = members.entry
        if not _DEVICE_ID.match(device_id):
            detail = f"topic {topic!r} level {segment} is not a device id ({device_id!r})"
            return self._reject(entry.id, None, Reason.UNKNOWN_DEVICE, detail, self._clock.now())
        with self._lock:
            if len(members.ids) < members.limit:
                members.ids.add(device_id)
                return None
            members.refused += 1
        now = self._clock.now()
        if members.logged_at is None:
            log.warning(
                "mqtt entry %s (%s): %d devices, the max_devices; further device ids are rejected: %r",
                entry.id,
                entry.mqtt.topic,
                members.limit,
                device_id,
            )
            members.refused = 0
            members.logged_at = now
        elif now - members.logged_at >= _CAP_LOG_INTERVAL:
            log.warning(
                "mqtt entry %s (%s): %d more messages from device ids beyond its %d devices (max_devices) "
                "rejected since %s, the latest from %r",
                entry.id,
                entry.mqtt.topic,
                members.refused,
                members.limit,
                _iso_utc(members.logged_at),
                device_id,
            )
            members.refused = 0
            members.logged_at = now
        detail = (
            f"{topic}: device id {device_id!r} refused: entry {entry.id} already stands for "
            f"{members.limit} devices (max_devices)"
        )
        # Counted against the entry, as an unknown device is; never streak-logged (the lines above are).
        return Rejection(entry.id, None, Reason.TOO_MANY_DEVICES, detail, now)

    def _wild_availability(self, topic: str, payload: bytes | bytearray) -> _Outcome:
        """Handle a topic that no data route owns: a wildcard availability topic, or nothing."""
        levels = topic.split("/")
        for a in self._avail_wild:
            if _matches(a.levels, levels):
                if a.segment is None or a.members is None:
                    device_id = a.device.id
                else:
                    device_id = levels[a.segment]
                    refused = self._admit(a.members, device_id, topic, a.segment)
                    if refused is not None:
                        return [], [refused]
                self._availability(a, device_id, topic, payload)
                break
        return None

    def _readings(
        self, route: _Route, device_id: str, topic: str, payload: bytes | bytearray, retained: bool
    ) -> _Outcome:
        now = self._clock.now()
        # A retained message proves the device was alive once, not now: online only if it gives readings.
        if not retained and self._online.get(device_id) is not True:
            self._set_online(device_id, True, None, now)
        data: object
        try:
            # bytes.decode + a bound decoder skips json.loads' encoding sniffing: ~1 µs a message.
            data = _decode_json(payload.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            if not route.bare_text:
                detail = f"{topic}: not JSON: {_short(payload)} ({exc})"
                return [], [self._reject(device_id, None, Reason.MALFORMED, detail, now)]
            # Many contact sensors publish bare words (open, ON); the point's map decides.
            data = bytes(payload).decode("utf-8", "replace").strip()
        if route.time_path is None:
            # Stamped on arrival: never two of one device's messages in one millisecond (a backlog
            # drains hundreds a second), so that distinct messages stay distinct readings.
            ms = round(now * 1000)
            last = self._stamps.get(device_id)
            if last is not None and ms <= last:
                ms = last + 1
            self._stamps[device_id] = ms
            t = ms / 1000.0
        else:
            raw_t = _dig(data, route.time_path)
            parsed = None if raw_t is _MISSING else parse_time(raw_t, self._tz)
            if parsed is None:
                field = ".".join(route.time_path)
                what = "missing" if raw_t is _MISSING else f"unreadable ({_short(raw_t)})"
                return [], self._reject_points(device_id, route, f"{topic}: time {field} {what}", now)
            if parsed > now + self._max_skew or parsed < now - self._max_age_or_inf:
                if retained and parsed < now:
                    # Old news the broker kept (a sensor long dead), not a wrong clock: nothing to store.
                    log.debug("mqtt %s: retained %r from %s skipped", self._where, topic, _iso_utc(parsed))
                    return None
                return [], self._reject_points(
                    device_id, route, self._implausible(route, topic, parsed, now), now
                )
            t = parsed
        if self._streaks:
            self._recovered(device_id, None)
        room = route.device.room
        obj: dict[str, object] | None = data if isinstance(data, dict) else None
        out: list[Reading] = []
        rejected: list[Rejection] | None = None
        for p in route.points:
            if p.key is not None:
                value = obj.get(p.key, _MISSING) if obj is not None else _MISSING
            elif p.path is not None:
                value = _dig(data, p.path)
            else:
                value = data
            if value is _MISSING:
                if p.key is not None or p.path is not None:
                    field = p.key or ".".join(p.path or ())
                    reason = Reason.MISSING if obj is not None else Reason.MALFORMED
                    detail = f"{topic}: no field {field!r} in {_short(payload)}"
                    if rejected is None:
                        rejected = []
                    rejected.append(self._reject(device_id, p.metric, reason, detail, now))
                continue
            verdict = p.check(value)
            if isinstance(verdict, float):
                out.append(Reading(device_id, room, p.metric, verdict, p.unit, t))
                if self._streaks:
                    self._recovered(device_id, p.metric)
            else:
                if rejected is None:
                    rejected = []
                rejected.append(self._reject(device_id, p.metric, verdict[0], f"{topic}: {verdict[1]}", now))
        if retained and out and self._online.get(device_id) is not True:
            self._set_online(device_id, True, None, now)
        return out, rejected

    def _implausible(self, route: _Route, topic: str, t: float, now: float) -> str:
        """Why a payload time is outside [now − max_age, now + max_clock_skew], for a person."""
        field = ".".join(route.time_path or ())
        if t > now + self._max_skew:
            return (
                f"{topic}: time {field} {_iso_utc(t)} is {t - now:.0f} s ahead of the clock ({_iso_utc(now)}), "
                f"beyond max_clock_skew {_duration(self._max_skew)}"
            )
        return (
            f"{topic}: time {field} {_iso_utc(t)} is older than the retention of "
            f"{_duration(self._max_age_or_inf)} (before {_iso_utc(now - self._max_age_or_inf)})"
        )

    def _availability(self, a: _Availability, device_id: str, topic: str, payload: bytes | bytearray) -> None:
        text = bytes(payload).decode("utf-8", "replace").strip()
        now = self._clock.now()
        if text == a.online:
            if self._online.get(device_id) is not True:
                self._set_online(device_id, True, None, now)
        elif text == a.offline:
            if self._online.get(device_id) is not False:
                self._set_online(device_id, False, f"reported offline via {topic}", now)
        else:
            log.debug(
                "device %s: availability %r on %s is neither %r nor %r",
                device_id,
                text,
                topic,
                a.online,
                a.offline,
            )

    def _set_online(self, device_id: str, online: bool, error: str | None, now: float) -> None:
        self._online[device_id] = online
        status = DeviceStatus.ONLINE if online else DeviceStatus.OFFLINE
        if not online:
            log.warning("device %s (mqtt %s): %s", device_id, self._where, error)
        self._sink.status(device_id, status, error, now)

    def _reject_points(self, device_id: str, route: _Route, detail: str, now: float) -> list[Rejection]:
        """A bad time rejects every point of the message; logged once, as the message's streak."""
        first = self._reject(device_id, None, Reason.BAD_TIME, detail, now)
        return [replace(first, metric=p.metric) for p in route.points]

    def _reject(
        self, device_id: str, metric: str | None, reason: Reason, detail: str, now: float
    ) -> Rejection:
        """A rejection for the sink (its message key is added at submit), logged once per streak."""
        rejection = Rejection(device_id, metric, reason, detail, now)
        key = (device_id, metric)
        with self._lock:
            streak = self._streaks.get(key)
            if streak is not None and streak[0] == reason:
                streak[1] += 1
                return rejection
            self._streaks[key] = [reason, 1]
        what = metric or "message"
        if streak is None:
            log.warning("device %s: %s rejected (%s): %s", device_id, what, reason.value, detail)
        else:
            log.warning(
                "device %s: %s rejected (%s) after %d rejected (%s): %s",
                device_id,
                what,
                reason.value,
                streak[1],
                streak[0].value,
                detail,
            )
        return rejection

    def _recovered(self, device_id: str, metric: str | None) -> None:
        with self._lock:
            streak = self._streaks.pop((device_id, metric), None)
        if streak is not None:
            # The start of the streak was logged: a streak of one (an isolated bad value) costs one
            # line at INFO, a longer one a second line with its count.
            log.log(
                logging.INFO if streak[1] > 1 else logging.DEBUG,
                "device %s: %s valid again after %d rejected (%s)",
                device_id,
                metric or "message",
                streak[1],
                streak[0].value,
            )


def _dig(data: object, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(data, dict):
            return _MISSING
        data = data.get(key, _MISSING)
        if data is _MISSING:
            return _MISSING
    return data


def _short(value: object) -> str:
    text = bytes(value).decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
