"""The site, its broker, its storage, its rooms, and the whole of devices.yaml (``Config``)."""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from core.config.devices import Device, ModbusDevice, MqttDevice
from core.config.scalars import Duration, Identifier, RoomKind, _Model
from core.config.schedule import DEFAULT_ACCESS_HOURS, AccessHours, Schedule, parse_access_hours
from core.config.thresholds import SiteRule, Thresholds
from core.protections import ProtectionId, default_protections


class Site(_Model):
    """The archive this installation guards."""

    name: str = "档案室"
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)"
            ) from None
        return value


class Tls(_Model):
    """TLS to the MQTT broker."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False  # skip the host-name check; for self-signed lab brokers only


class MqttBroker(_Model):
    """The MQTT broker Bafang subscribes to. ``url: embedded`` starts an in-process broker."""

    url: str = "embedded"
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = "bafang"
    protocol: Literal["3.1.1", "5"] = "5"
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    qos: Literal[0, 1] = 1
    # How long the broker keeps our session (subscriptions and queued QoS 1 messages) while we are away.
    session_expiry: Duration = 7 * 86400.0
    # Messages received but not yet stored and acknowledged. MQTT 5 tells the broker (Receive Maximum);
    # with 3.1.1 set Mosquitto's max_inflight_messages to the same. Beyond it Bafang stops reading from
    # the broker until a batch is stored, so a backlog waits in the broker, not in Bafang's memory.
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 1000
    # A payload time (time_path) further ahead of our clock than this is rejected (bad_time), as is one
    # older than storage.timeseries.retention_days: a sensor with a wrong clock never freezes a series.
    max_clock_skew: Duration = 300.0
    tls: Tls | None = None
    # Subscribe through `$share/<group>/...` so several replicas share the load.
    shared_group: Identifier | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value == "embedded" or re.match(r"^mqtts?://[^/:]+(:\d+)?/?$", value):
            return value
        raise ValueError(f"{value!r} is not 'embedded' nor mqtt://host[:port] or mqtts://host[:port]")


class Timeseries(_Model):
    """Where readings are kept."""

    backend: Literal["sqlite"] = "sqlite"
    path: str | None = None  # default: readings.db beside the records database, or data/readings.db
    retention_days: Annotated[int, Field(ge=1, le=36500)] = 90  # raw readings; hourly min/mean/max forever
    flush_interval: Duration = 1.0
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # Readings accepted but not yet stored, at most (the store is slow or unavailable). Beyond it the
    # oldest polled readings are dropped, counted per device and logged; MQTT messages are never
    # dropped here: they stay with the broker (receive_maximum bounds what Bafang holds of them).
    max_pending: Annotated[int, Field(ge=1000, le=10_000_000)] = 100_000


class Storage(_Model):
    """Records (SQLAlchemy URL) and readings."""

    database: str = "sqlite:///data/bafang.db"
    timeseries: Timeseries = Timeseries()


class Room(_Model):
    """An archive room (库房)."""

    id: Identifier
    name: str
    kind: RoomKind = "paper"
    # Outside these the room is closed: an open door, intrusion or light on is an alert.
    access_hours: AccessHours = DEFAULT_ACCESS_HOURS
    thresholds: Thresholds = Thresholds()  # this room's overrides; they win over the site's
    protections: list[ProtectionId] | None = None  # shown for this room; default: default_protections()

    @property
    def access_schedule(self) -> Schedule:
        """The parsed access hours: ``room.access_schedule.open_at(epoch, site.timezone)``."""
        return parse_access_hours(self.access_hours)

    @field_validator("protections")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a protection is listed twice")
        return value


class Config(_Model):
    """The whole of devices.yaml."""

    site: Site = Site()
    mqtt: MqttBroker = MqttBroker()
    storage: Storage = Storage()
    rooms: list[Room] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)
    thresholds: Thresholds = Thresholds()  # site-wide overrides of the protections' defaults
    rules: list[SiteRule] = Field(default_factory=list)  # the site's own rules on any metric

    def device(self, device_id: str) -> ModbusDevice | MqttDevice:
        """The configured device with this id."""
        for d in self.devices:
            if d.id == device_id:
                return d
        raise KeyError(device_id)

    def room_of(self, room_id: str) -> Room:
        """The room with this id."""
        for r in self.rooms:
            if r.id == room_id:
                return r
        raise KeyError(room_id)

    def room_metrics(self, room_id: str) -> set[str]:
        """The metrics that the devices of a room measure."""
        return {p.metric for d in self.devices if d.room == room_id for p in d.points}

    def protections_of(self, room_id: str) -> tuple[str, ...]:
        """The protections shown for a room: its own list, or the default for its sensors.

        Monitoring lost is always included: a silent sensor must never go unnoticed.
        """
        room = self.room_of(room_id)
        if room.protections is None:
            return default_protections(self.room_metrics(room_id))
        listed = tuple(room.protections)
        return listed if "monitoring" in listed else (*listed, "monitoring")

    def thresholds_of(self, room_id: str) -> Thresholds:
        """A room's threshold overrides merged over the site's (the protections add their defaults)."""
        return self.room_of(room_id).thresholds.merged(self.thresholds)

    def rules_of(self, room_id: str) -> list[SiteRule]:
        """The site rules that apply to a room (given for the room or for one of its devices)."""
        devices = {d.id for d in self.devices if d.room == room_id}
        return [r for r in self.rules if r.room == room_id or (r.device is not None and r.device in devices)]
