"""Simulated MQTT sensors for `bafang demo`: door contacts, leak ropes and T/H sensors of a gateway.

Publishes what real devices publish (JSON objects, bare values, availability messages) so that the
demo exercises the same decoding as a site. Values follow the local time of day: doors open during
working hours now and then, stay closed at night, and a leak is reported very rarely.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class SimDoor:
    """A door contact publishing {"contact": "open"|"closed", "battery": %} and online/offline status."""

    topic: str
    status_topic: str | None = None


@dataclass(frozen=True)
class SimLeak:
    """A leak rope publishing a bare 0 / 1."""

    topic: str


@dataclass(frozen=True)
class SimClimate:
    """A T/H sensor publishing {"sensor": {"t": °C, "rh": %}} with its own daily curve."""

    topic: str
    base_t: float = 19.5
    base_rh: float = 52.0


class MqttSimulator:
    """Publishes simulated sensor messages to a broker every `period` seconds, in its own thread."""

    def __init__(
        self,
        host: str,
        port: int,
        devices: Sequence[SimDoor | SimLeak | SimClimate],
        *,
        period: float = 5.0,
        timezone: str = "Asia/Shanghai",
        seed: int | None = None,
    ) -> None:
        self._devices = list(devices)
        self._period = period
        self._tz = ZoneInfo(timezone)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._doors_open: dict[str, int] = {}
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bafang-sim-{id(self):x}")
        self._host, self._port = host, port
        self.published = 0

    def start(self) -> None:
        """Connect and start publishing."""
        for d in self._devices:
            if isinstance(d, SimDoor) and d.status_topic:
                self._client.will_set(d.status_topic, "offline", qos=1, retain=True)
                break
        self._client.connect(self._host, self._port)
        self._client.loop_start()
        for d in self._devices:
            if isinstance(d, SimDoor) and d.status_topic:
                self._client.publish(d.status_topic, "online", qos=1, retain=True)
        self._thread = threading.Thread(target=self._run, name="bafang-mqtt-sim", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick(datetime.now(self._tz))
            self._stop.wait(self._period)

    def tick(self, now: datetime) -> None:
        """Publish one message per simulated device for the local time `now`."""
        hours = now.hour + now.minute / 60
        working = now.weekday() < 5 and 8.5 <= hours < 17.5
        for d in self._devices:
            if isinstance(d, SimDoor):
                left = self._doors_open.get(d.topic, 0)
                if left > 0:
                    self._doors_open[d.topic] = left - 1
                elif working and self._rng.random() < 0.05:
                    self._doors_open[d.topic] = self._rng.randint(1, 6)
                state = "open" if self._doors_open.get(d.topic, 0) > 0 else "closed"
                self._publish(d.topic, {"contact": state, "battery": 87})
            elif isinstance(d, SimLeak):
                self._publish(d.topic, 1 if self._rng.random() < 0.002 else 0)
            else:
                day = math.sin((hours - 9.0) / 24 * 2 * math.pi)
                t = d.base_t + 1.2 * day + self._rng.gauss(0, 0.05)
                rh = d.base_rh - 3.0 * day + self._rng.gauss(0, 0.2)
                self._publish(d.topic, {"sensor": {"t": round(t, 2), "rh": round(rh, 1)}})

    def _publish(self, topic: str, payload: object) -> None:
        self._client.publish(topic, json.dumps(payload), qos=1)
        self.published += 1

    def stop(self) -> None:
        """Stop publishing and disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()
