"""Helpers for the MQTT collector tests: a thread-safe recording sink, real paho messages, and a
``client_factory`` whose paho clients note the acknowledgements the collector sends them."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from collectors.mqtt import MqttCollector
from core.config import MqttBroker, MqttDevice
from core.types import Ack, Delivery, DeviceStatus, Reading, Reason, Rejection
from tests.conftest import MqttTestBroker

NOWHERE = "mqtt://127.0.0.1:1"  # a broker URL for collectors that are never started

_ids = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test uses on the shared broker."""
    return f"{prefix}-{next(_ids)}-{threading.get_ident() % 10000}"


def broker_config(broker: MqttTestBroker, **options: Any) -> MqttBroker:
    """The devices.yaml `mqtt:` section pointing at a test broker."""
    scheme = "mqtts" if options.get("tls") else "mqtt"
    options.setdefault("client_id", unique("bafang"))
    if broker.kind == "amqtt":
        if options.get("protocol") == "5":
            pytest.skip("the embedded amqtt broker speaks MQTT 3.1.1 only")
        options["protocol"] = "3.1.1"
    return MqttBroker.model_validate({"url": f"{scheme}://{broker.host}:{broker.port}", **options})


class Publisher:
    """A paho client that publishes at QoS 1 and waits for the broker's PUBACK."""

    def __init__(self, broker: MqttTestBroker) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def __call__(
        self, topic: str, payload: bytes | str | float | dict[str, Any], retain: bool = False
    ) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=5)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


Start = Callable[..., MqttCollector]


class RecordingSink:
    """A thread-safe sink that keeps everything it is given.

    It acknowledges each submit at once, or with ``hold=True`` keeps the acks until ``release()``
    (called from the test's thread, as the pipeline calls them from its event loop's).
    """

    def __init__(self, *, hold: bool = False) -> None:
        self._lock = threading.Lock()
        self.hold = hold
        self.readings: list[Reading] = []
        self.rejections: list[Rejection] = []
        self.statuses: list[tuple[str, DeviceStatus, str | None]] = []
        self.submits = 0
        self.acks: list[Ack | None] = []  # one per submit, in order
        self.deliveries: list[Delivery | None] = []  # one per submit, in order
        self.pending: list[Ack] = []

    def submit(
        self,
        readings: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        ack: Ack | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        """Record a submit; acknowledge it unless holding."""
        with self._lock:
            self.readings.extend(readings)
            self.rejections.extend(rejections)
            self.submits += 1
            self.acks.append(ack)
            self.deliveries.append(delivery)
            if ack is not None and self.hold:
                self.pending.append(ack)
                return
        if ack is not None:
            ack()

    def release(self) -> int:
        """Call the held acks; how many."""
        with self._lock:
            pending, self.pending = self.pending, []
        for ack in pending:
            ack()
        return len(pending)

    def reject(self, rejection: Rejection) -> None:
        """Record a rejection handed over on its own."""
        with self._lock:
            self.rejections.append(rejection)

    def status(self, device: str, status: DeviceStatus, error: str | None, time: float) -> None:
        """Record a status edge."""
        with self._lock:
            self.statuses.append((device, status, error))

    def values(self, device: str | None = None) -> list[tuple[str, str, float]]:
        """(device, metric, value) of every reading, in order."""
        with self._lock:
            return [
                (r.device, r.metric, r.value) for r in self.readings if device is None or r.device == device
            ]

    def reasons(self) -> list[tuple[str, str | None, Reason]]:
        """(device, metric, reason) of every rejection, in order."""
        with self._lock:
            return [(r.device, r.metric, r.reason) for r in self.rejections]


class RefusingSink(RecordingSink):
    """A sink that refuses every submit (the pipeline broken, or closed) with ``RuntimeError(why)``."""

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why

    def submit(
        self,
        readings: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        ack: Ack | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        """Refuse."""
        raise RuntimeError(self.why)


def device(spec: dict[str, Any]) -> MqttDevice:
    """An MqttDevice from a devices.yaml-like dict (room r1)."""
    return MqttDevice.model_validate({"room": "r1", **spec})


def message(
    topic: str | bytes, payload: bytes, *, qos: int = 0, mid: int = 0, retain: bool = False, dup: bool = False
) -> paho.MQTTMessage:
    """A real paho message, as the network thread would hand it over (public constructor and attributes)."""
    msg = paho.MQTTMessage(mid=mid, topic=topic.encode() if isinstance(topic, str) else topic)
    msg.payload = payload
    msg.qos = qos
    msg.retain = retain
    msg.dup = dup
    return msg


def deliver(client: paho.Client, msg: paho.MQTTMessage) -> None:
    """Hand a message over as paho's network thread does: through the on_message the collector set."""
    on_message = client.on_message
    assert on_message is not None, "the collector sets on_message on the client its factory built"
    on_message(client, None, msg)


class AckRecordingClient(paho.Client):
    """A real paho client that also notes the packet id of every ack it is asked to send.

    Never connected, it only queues the PUBACKs; the note is what a test reads instead of paho's queue.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acks: list[int] = []

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        """Note the ack, then let paho queue it."""
        self.acks.append(mid)
        return super().ack(mid, qos)


class ClientFactory:
    """A ``client_factory`` for MqttCollector: ack-recording clients, each kept with the arguments it got."""

    def __init__(self) -> None:
        self.clients: list[AckRecordingClient] = []
        self.calls: list[tuple[str, MQTTProtocolVersion, bool]] = []

    def __call__(self, broker: MqttBroker, *, protocol: MQTTProtocolVersion, tls: bool) -> AckRecordingClient:
        """Build a client for the broker's client id and protocol (no credentials or TLS: never connected)."""
        self.calls.append((broker.client_id, protocol, tls))
        session: dict[str, Any] = {} if protocol == MQTTProtocolVersion.MQTTv5 else {"clean_session": False}
        client = AckRecordingClient(
            CallbackAPIVersion.VERSION2,
            client_id=broker.client_id,
            protocol=protocol,
            manual_ack=True,
            **session,
        )
        self.clients.append(client)
        return client

    @property
    def client(self) -> AckRecordingClient:
        """The client built last."""
        return self.clients[-1]


def offline_collector(
    devices: Sequence[MqttDevice], sink: Any, **kw: Any
) -> tuple[MqttCollector, AckRecordingClient]:
    """A collector that is never started, and its paho client (which records the acks it is given)."""
    factory = ClientFactory()
    collector = MqttCollector(MqttBroker(url=NOWHERE), devices, sink, client_factory=factory, **kw)
    return collector, factory.client
