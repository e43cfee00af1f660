"""devices.yaml: pydantic models of the installation, and a loader whose errors point at a line.

Every error names the file, the line and the field, for example
``devices.yaml:42: devices[3].points[1].type: 'float' is not one of bool, uint16, int16, ...``.
Unknown keys are errors. ``${VAR}`` (or ``${VAR:-default}``) in any string is replaced by the
environment variable, so secrets never live in the file.
"""

from __future__ import annotations

import functools
import math
import os
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from core.metrics import METRICS

# ---------------------------------------------------------------------------------------------
# Scalars

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Read ``250ms``, ``30s``, ``5m``, ``1h``, ``2d`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 5m or 1h is expected")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 1h")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive (got {value!r})")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]

TableName = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["bool", "uint16", "int16", "uint32", "int32", "float32", "uint64", "int64", "float64"]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
RoomKind = Literal["paper", "special", "magnetic", "film_copy", "film_master"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Site, broker, storage, rooms


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


class Storage(_Model):
    """Records (SQLAlchemy URL) and readings."""

    database: str = "sqlite:///data/bafang.db"
    timeseries: Timeseries = Timeseries()


# ---------------------------------------------------------------------------------------------
# Access hours: when a room is open (door, intrusion and light rules depend on it)

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
# The usual office day of a Chinese power-supply company's archive; override per room.
DEFAULT_ACCESS_HOURS = "Mon-Fri 08:30-17:30"


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly opening spans: for each weekday (0 = Monday) the (start, end) minutes after midnight."""

    text: str
    days: tuple[tuple[tuple[int, int], ...], ...]

    def open_at(self, epoch: float, tz: str) -> bool:
        """Whether the room is inside its access hours at this instant, in the site's time zone."""
        local = datetime.fromtimestamp(epoch, zoneinfo.ZoneInfo(tz))
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.days[local.weekday()])


def _day(token: str) -> int:
    name = token.strip().lower()
    for i, day in enumerate(_DAYS):
        if len(name) >= 3 and day.startswith(name[:3]) and _FULL_DAYS[i].startswith(name):
            return i
    return -1


def _minute(hours: str, minutes: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise ValueError(f"{hours}:{minutes} is not a time of day (00:00 … 24:00)")
    return h * 60 + m


@functools.lru_cache(maxsize=256)
def parse_access_hours(text: str) -> Schedule:
    """Read ``Mon-Fri 08:30-12:00,13:30-17:30; Sat 09:00-12:00`` (or ``always`` / ``never``)."""
    word = text.strip().lower()
    if word in ("always", "24/7"):
        return Schedule(text, tuple(((0, 1440),) for _ in _DAYS))
    if word == "never":
        return Schedule(text, tuple(() for _ in _DAYS))
    spans: list[list[tuple[int, int]]] = [[] for _ in _DAYS]
    hint = "write e.g. 'Mon-Fri 08:30-12:00,13:30-17:30; Sat 09:00-12:00', 'always' or 'never'"
    for group in text.split(";"):
        parts = group.split()
        if len(parts) != 2:
            raise ValueError(f"{group.strip()!r}: expected days then times, groups separated by ';'; {hint}")
        days: list[int] = []
        for item in parts[0].split(","):
            first, _, last = item.partition("-")
            a = _day(first)
            b = _day(last) if last else a
            if a < 0 or b < 0:
                raise ValueError(f"{item!r} is not a day or a day range such as Mon-Fri")
            days.extend((a + k) % 7 for k in range((b - a) % 7 + 1))  # Fri-Mon wraps over the weekend
        for item in parts[1].split(","):
            m = _SPAN.match(item)
            if not m:
                raise ValueError(f"{item!r} is not a span of time such as 08:30-17:30")
            start, end = _minute(m.group(1), m.group(2)), _minute(m.group(3), m.group(4))
            if end <= start:
                raise ValueError(
                    f"{item!r} ends before it starts "
                    "(split a night across midnight: 'Mon 22:00-24:00; Tue 00:00-06:00')"
                )
            for d in days:
                spans[d].append((start, end))
    return Schedule(text, tuple(tuple(sorted(s)) for s in spans))


def _access_hours(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"access hours must be text such as {DEFAULT_ACCESS_HOURS!r} (got {value!r})")
    parse_access_hours(value)
    return value


AccessHours = Annotated[str, BeforeValidator(_access_hours)]

# ---------------------------------------------------------------------------------------------
# Thresholds: overrides of the protections' defaults (rules/protections/*.py hold the defaults and
# cite their sources). Every key is optional: what is not given comes from the site's `thresholds:`,
# then from the protection's default for the room's kind.

ProtectionId = Literal[
    "fire",
    "theft",
    "damp",
    "temperature",
    "light",
    "dust",
    "insects",
    "rodents",
    "water",
    "mold",
    "pollution",
    "monitoring",
]
PROTECTION_IDS: tuple[str, ...] = get_args(ProtectionId)
CLASSIC_EIGHT: tuple[str, ...] = (
    "fire",
    "theft",
    "damp",
    "temperature",
    "light",
    "dust",
    "insects",
    "rodents",
)
POLLUTANTS: tuple[str, ...] = ("co2", "hcho", "tvoc", "so2", "no2", "o3")
# Metrics that the rules engine derives per room from its temperature and humidity; site rules may use them.
DERIVED_METRICS: tuple[str, ...] = ("mold_risk",)

NonNegative = Annotated[float, Field(ge=0)]


class _Overrides(_Model):
    """A group of threshold overrides; None = not set here."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def merged(self, base: Self | None) -> Self:
        """These overrides on top of ``base`` (the site's): what is set here wins, key by key."""
        if base is None:
            return self
        values: dict[str, Any] = {}
        for name in type(self).model_fields:
            own, theirs = getattr(self, name), getattr(base, name)
            if isinstance(own, _Overrides) and isinstance(theirs, _Overrides):
                values[name] = own.merged(theirs)
            else:
                values[name] = own if own is not None else theirs
        return type(self).model_construct(**values)


class Band(_Overrides):
    """A climate band (humidity in %RH, temperature in °C): alert outside [min, max] for ``for``."""

    min: float | None = None
    max: float | None = None
    for_: Duration | None = Field(None, alias="for")  # hold: how long outside before the alert fires
    clear: NonNegative | None = None  # hysteresis: back inside by this much before it clears
    clear_for: Duration | None = None  # ... and for this long
    critical: float | None = None  # at or above: critical instead of warning
    critical_low: float | None = None  # at or below: critical

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"min must be below max (got min {self.min:g}, max {self.max:g})")
        if self.critical is not None and self.max is not None and self.critical < self.max:
            raise ValueError(
                f"critical must not be below max (got critical {self.critical:g}, max {self.max:g})"
            )
        if self.critical_low is not None and self.min is not None and self.critical_low > self.min:
            raise ValueError(
                f"critical_low must not be above min (got critical_low {self.critical_low:g}, min {self.min:g})"
            )
        return self


class Swing(_Overrides):
    """Daily fluctuation: max − min over the rolling 24 h."""

    max: Annotated[float, Field(gt=0)] | None = None
    for_: Duration | None = Field(None, alias="for")
    clear: NonNegative | None = None
    clear_for: Duration | None = None


class FireThresholds(_Overrides):
    """Fire pre-alarm from a room's temperature (advisory: a T/H transmitter is not a heat detector)."""

    rate: Annotated[float, Field(gt=0)] | None = None  # °C per minute
    window: Annotated[float, Field(ge=10, le=600), BeforeValidator(parse_duration)] | None = None
    max_temperature: float | None = None  # °C


class DoorThresholds(_Overrides):
    """Door contacts: how long a door may stand open inside access hours."""

    open_max: Duration | None = None


class LightThresholds(_Overrides):
    """Light while closed, and UV."""

    closed_lux: NonNegative | None = None  # above this outside access hours = light left on
    uv_max: NonNegative | None = None  # µW/lm
    for_: Duration | None = Field(None, alias="for")
    clear_for: Duration | None = None


class Limit(_Overrides):
    """An upper limit (dust: on the 24 h mean; pollutants: on the value held for ``for``)."""

    max: NonNegative | None = None
    for_: Duration | None = Field(None, alias="for")
    clear_for: Duration | None = None
    critical: NonNegative | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Limit:
        if self.critical is not None and self.max is not None and self.critical < self.max:
            raise ValueError(
                f"critical must not be below max (got critical {self.critical:g}, max {self.max:g})"
            )
        return self


class Pollution(_Overrides):
    """Per-pollutant limits."""

    co2: Limit | None = None
    hcho: Limit | None = None
    tvoc: Limit | None = None
    so2: Limit | None = None
    no2: Limit | None = None
    o3: Limit | None = None


class InsectThresholds(_Overrides):
    """Insect-favourable climate: T above and RH above, persisting for ``for``."""

    temperature: float | None = None
    humidity: float | None = None
    for_: Duration | None = Field(None, alias="for")
    clear_for: Duration | None = None


class MoldThresholds(_Overrides):
    """Mold risk factor (accumulated time above the germination isopleth; 1 = germination expected)."""

    max: Annotated[float, Field(gt=0)] | None = None
    clear_for: Duration | None = None


class MonitoringThresholds(_Overrides):
    """Monitoring lost: no valid reading for this many poll intervals (or a point's stale_after)."""

    missed_intervals: Annotated[int, Field(ge=1, le=1000)] | None = None


class Thresholds(_Overrides):
    """Overrides of the protections' defaults, site-wide (top-level ``thresholds:``) or per room."""

    humidity: Band | None = None
    temperature: Band | None = None
    humidity_swing: Swing | None = None
    temperature_swing: Swing | None = None
    fire: FireThresholds | None = None
    door: DoorThresholds | None = None
    light: LightThresholds | None = None
    pm25: Limit | None = None
    pm10: Limit | None = None
    insects: InsectThresholds | None = None
    pollution: Pollution | None = None
    mold: MoldThresholds | None = None
    monitoring: MonitoringThresholds | None = None


def default_protections(metrics: Iterable[str]) -> tuple[str, ...]:
    """The protections shown for a room with these metrics: the classic eight, plus water, mold and
    pollution where it has those sensors, and monitoring (always)."""
    have = set(metrics)
    extra: list[str] = []
    if "water_leak" in have:
        extra.append("water")
    if {"temperature", "humidity"} <= have or "mold_risk" in have:
        extra.append("mold")  # the mold risk is derived from the room's temperature and humidity
    if have.intersection(POLLUTANTS):
        extra.append("pollution")
    return (*CLASSIC_EIGHT, *extra, "monitoring")


# ---------------------------------------------------------------------------------------------
# Site rules: a site's own threshold on any metric


class SiteRule(_Model):
    """A site's own rule, e.g. {name: 恒温恒湿机停机, device: ac-1, metric: power, below: 1, for: 5m}."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=64)]
    device: Identifier | None = None
    room: Identifier | None = None
    metric: str
    above: float | None = None
    below: float | None = None
    for_: Duration | None = Field(None, alias="for")
    clear: float | None = None  # the level at which it clears (default: the trigger level itself)
    clear_for: Duration | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    protection: ProtectionId

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS and value not in DERIVED_METRICS:
            known = ", ".join(sorted((*METRICS, *DERIVED_METRICS)))
            raise ValueError(f"{value!r} is not a known metric ({known})")
        return value

    @model_validator(mode="after")
    def _shape(self) -> SiteRule:
        if self.device is None and self.room is None:
            raise ValueError("a rule needs device: or room:")
        if (self.above is None) == (self.below is None):
            raise ValueError("a rule needs exactly one of above: or below:")
        if self.clear is not None:
            if self.above is not None and self.clear > self.above:
                raise ValueError(f"clear {self.clear:g} must not be above the trigger level {self.above:g}")
            if self.below is not None and self.clear < self.below:
                raise ValueError(f"clear {self.clear:g} must not be below the trigger level {self.below:g}")
        return self


# ---------------------------------------------------------------------------------------------
# Rooms


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


# ---------------------------------------------------------------------------------------------
# Points


class _PointBase(_Model):
    metric: str
    unit: str | None = None  # defaults to the metric's unit
    scale: float = 1.0
    offset: float = 0.0
    range: tuple[float, float] | None = None  # plausible values; defaults to the metric's range
    fault_codes: list[float] | None = None  # sensor fault sentinels; defaults per type / protocol
    stale_after: Duration | None = None  # no valid value for this long = monitoring lost

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"{value!r} is not a known metric ({', '.join(sorted(METRICS))})")
        return value

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"range must be [min, max] with min < max (got {list(value)})")
        return value

    @property
    def resolved_unit(self) -> str:
        """The unit stored with each reading."""
        return self.unit if self.unit is not None else METRICS[self.metric].unit

    @property
    def resolved_range(self) -> tuple[float, float]:
        """The plausible range of a value after scale and offset."""
        if self.range is not None:
            return self.range
        m = METRICS[self.metric]
        return (m.low, m.high)


REGISTER_COUNT: dict[str, int] = {
    "bool": 1,
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
    "uint64": 4,
    "int64": 4,
    "float64": 4,
}


class ModbusPoint(_PointBase):
    """One value read from a Modbus unit."""

    address: Annotated[int, Field(ge=0, le=65535)]
    table: TableName = "holding"
    type: DataType | None = None  # default: uint16 for registers, bool for coil / discrete
    byte_order: ByteOrder = "ABCD"

    @model_validator(mode="after")
    def _type_fits_table(self) -> ModbusPoint:
        bits = self.table in ("coil", "discrete")
        if bits and self.type not in (None, "bool"):
            raise ValueError(f"a {self.table} is one bit: type must be bool (got {self.type})")
        if self.address + self.count - 1 > 65535:
            raise ValueError(f"address {self.address} + {self.count} registers passes 65535")
        return self

    @property
    def data_type(self) -> str:
        """The effective data type."""
        if self.type is not None:
            return self.type
        return "bool" if self.table in ("coil", "discrete") else "uint16"

    @property
    def count(self) -> int:
        """Registers (or bits) this point spans."""
        return REGISTER_COUNT[self.data_type]


class MqttPoint(_PointBase):
    """One value taken from an MQTT payload."""

    path: str | None = None  # a field of a JSON payload, dotted for nesting; none = the payload itself
    map: dict[str, float] | None = None  # text (or true/false) → number, e.g. {open: 1, closed: 0}


# ---------------------------------------------------------------------------------------------
# Devices


class ModbusConnection(_Model):
    """Where a Modbus unit is: a TCP gateway (host) or a serial RS-485 line (serial)."""

    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    serial: str | None = None
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit: Annotated[int, Field(ge=0, le=247)] = 1
    timeout: Duration = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1

    @model_validator(mode="after")
    def _one_transport(self) -> ModbusConnection:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give either host (Modbus TCP) or serial (Modbus RTU), not both nor neither")
        return self

    @property
    def bus(self) -> str:
        """The physical bus: host:port or the serial device. One connection and one lock per bus."""
        return self.serial if self.serial is not None else f"{self.host}:{self.port}"

    @property
    def describe(self) -> str:
        """Human-readable address for messages."""
        return f"{self.bus} unit {self.unit}"


class MqttSubscription(_Model):
    """The topic a device publishes on, and optionally its availability topic."""

    topic: str
    # With a wildcard topic, the topic level (0-based) whose value is the device id: one entry in
    # devices.yaml then stands for every device publishing there, all in the same room.
    device_id_segment: Annotated[int, Field(ge=0)] | None = None
    availability_topic: str | None = None
    payload_available: str = "online"
    payload_not_available: str = "offline"
    time_path: str | None = None  # payload field with the measurement time (ISO 8601 or epoch s / ms)

    @field_validator("topic", "availability_topic")
    @classmethod
    def _valid_filter(cls, value: str | None) -> str | None:
        if value is None:
            return value
        levels = value.split("/")
        for i, level in enumerate(levels):
            if ("+" in level and level != "+") or ("#" in level and (level != "#" or i != len(levels) - 1)):
                raise ValueError(f"{value!r} is not a valid MQTT topic filter")
        return value

    @model_validator(mode="after")
    def _segment_is_wildcard(self) -> MqttSubscription:
        if self.device_id_segment is not None:
            levels = self.topic.split("/")
            if self.device_id_segment >= len(levels) or levels[self.device_id_segment] != "+":
                raise ValueError(
                    f"device_id_segment {self.device_id_segment} must point at a '+' level of {self.topic!r}"
                )
        return self


class _DeviceBase(_Model):
    id: Identifier
    room: Identifier
    name: str | None = None


class ModbusDevice(_DeviceBase):
    """A device read by polling a Modbus unit."""

    modbus: ModbusConnection
    poll: Duration = 30.0
    points: Annotated[list[ModbusPoint], Field(min_length=1)]

    @property
    def protocol(self) -> str:
        """modbus-tcp or modbus-rtu."""
        return "modbus-rtu" if self.modbus.serial else "modbus-tcp"


class MqttDevice(_DeviceBase):
    """A device that publishes to MQTT."""

    mqtt: MqttSubscription
    # Expected reporting interval: three missed intervals = monitoring lost. Event sensors that
    # publish only on change should set a point's stale_after or a heartbeat here.
    poll: Duration | None = None
    points: Annotated[list[MqttPoint], Field(min_length=1)]

    @property
    def protocol(self) -> str:
        """Always mqtt."""
        return "mqtt"


def _device_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "modbus" in value and "mqtt" not in value:
            return "modbus"
        if "mqtt" in value and "modbus" not in value:
            return "mqtt"
    return None


Device = Annotated[
    Annotated[ModbusDevice, Tag("modbus")] | Annotated[MqttDevice, Tag("mqtt")],
    Discriminator(
        _device_kind,
        custom_error_type="device_kind",
        custom_error_message="a device needs exactly one of modbus: or mqtt:",
    ),
]


class Config(_Model):
    """The whole of devices.yaml."""

    site: Site = Site()
    mqtt: MqttBroker = MqttBroker()
    storage: Storage = Storage()
    rooms: list[Room] = []
    devices: list[Device] = []
    thresholds: Thresholds = Thresholds()  # site-wide overrides of the protections' defaults
    rules: list[SiteRule] = []  # the site's own rules on any metric

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


# ---------------------------------------------------------------------------------------------
# Loading with line numbers


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """devices.yaml is not valid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


Loc = tuple[str | int, ...]
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Reader:
    """Turns a composed YAML node tree into plain data, remembering each node's line."""

    def __init__(self, file: str, environ: dict[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.lines: dict[Loc, int] = {}
        self.key_lines: dict[Loc, int] = {}
        self.issues: list[ConfigIssue] = []

    def issue(self, loc: Loc, line: int, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, line, format_loc(loc), message))

    def build(self, node: yaml.Node, loc: Loc = ()) -> Any:
        line = node.start_mark.line + 1
        self.lines[loc] = line
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.build_scalar(key_node)
                if not isinstance(key, str | int | float | bool):
                    self.issue(loc, key_node.start_mark.line + 1, "keys must be plain scalars")
                    continue
                skey = str(key).lower() if isinstance(key, bool) else str(key)
                child = (*loc, skey)
                if skey in out:
                    self.issue(child, key_node.start_mark.line + 1, "duplicate key")
                    continue
                self.key_lines[child] = key_node.start_mark.line + 1
                out[skey] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, (*loc, i)) for i, v in enumerate(node.value)]
        value = self.build_scalar(node)
        if isinstance(value, str) and "${" in value:
            value = self.substitute(value, loc, line)
        return value

    def build_scalar(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return _construct(node)
        return None

    def substitute(self, text: str, loc: Loc, line: int) -> str:
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.issue(loc, line, f"environment variable {name} is not set")
            return ""

        return _ENV.sub(repl, text)

    def line_of(self, loc: Loc) -> tuple[int, Loc]:
        """The line of the deepest node along loc, and loc reduced to segments present in the data."""
        present: list[str | int] = []
        best = self.lines.get((), 1)
        for i, seg in enumerate(loc):
            if i == 2 and loc[0] == "devices" and seg in ("modbus", "mqtt"):
                continue  # the device-kind tag that pydantic adds to the path, not a key of the file
            cand = (*present, seg)
            if cand in self.lines:
                present.append(seg)
                best = self.key_lines.get(cand, self.lines[cand])
            else:
                present.append(seg)  # an absent key (missing or unknown): keep it in the path
        return best, tuple(present)


_LOADER = yaml.SafeLoader("")


def _construct(node: yaml.ScalarNode) -> Any:
    return _LOADER.construct_object(node, deep=True)


def format_loc(loc: Iterable[str | int]) -> str:
    """('devices', 3, 'points', 1, 'type') → devices[3].points[1].type"""
    out = ""
    for seg in loc:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def _literal_choices(expected: str) -> str:
    return ", ".join(s.strip().strip("'\"") for s in re.split(r",\s*|\s+or\s+", expected) if s.strip())


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind == "literal_error":
        return f"{given!r} is not one of {_literal_choices(str(ctx.get('expected', '')))}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("less_than_equal", "less_than"):
        sign = "≤" if kind == "less_than_equal" else "<"
        return f"must be {sign} {ctx.get('le', ctx.get('lt'))} (got {given!r})"
    if kind in ("greater_than_equal", "greater_than"):
        sign = "≥" if kind == "greater_than_equal" else ">"
        return f"must be {sign} {ctx.get('ge', ctx.get('gt'))} (got {given!r})"
    if kind == "string_pattern_mismatch":
        return f"{given!r} is not a valid id (letters, digits, _ . : -; at most 64)"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = str(err["msg"])
    if kind == "device_kind":
        return msg
    return f"{msg} (got {given!r})" if given is not None and not isinstance(given, dict | list) else msg


def _cross_check(cfg: Config) -> list[tuple[Loc, str]]:
    """Checks that span entries: unique ids, known rooms, no register read by two points."""
    problems: list[tuple[Loc, str]] = []
    room_ids: set[str] = set()
    for i, room in enumerate(cfg.rooms):
        if room.id in room_ids:
            problems.append((("rooms", i, "id"), f"duplicate room id {room.id!r}"))
        room_ids.add(room.id)
    device_ids: dict[str, int] = {}
    registers: dict[tuple[str, int, str, int], str] = {}
    for i, dev in enumerate(cfg.devices):
        if dev.id in device_ids:
            problems.append(
                (("devices", i, "id"), f"duplicate device id {dev.id!r} (also devices[{device_ids[dev.id]}])")
            )
        device_ids.setdefault(dev.id, i)
        if dev.room not in room_ids:
            known = ", ".join(sorted(room_ids)) or "none defined"
            problems.append((("devices", i, "room"), f"unknown room {dev.room!r} (rooms: {known})"))
        metrics: set[str] = set()
        for j, point in enumerate(dev.points):
            if point.metric in metrics:
                problems.append(
                    (("devices", i, "points", j, "metric"), f"metric {point.metric!r} appears twice")
                )
            metrics.add(point.metric)
        if isinstance(dev, ModbusDevice):
            conn = dev.modbus
            for j, point in enumerate(dev.points):
                space = "bits" if point.table in ("coil", "discrete") else "registers"
                for k in range(point.count):
                    key = (conn.bus, conn.unit, point.table, point.address + k)
                    other = registers.get(key)
                    if other is not None:
                        problems.append(
                            (
                                ("devices", i, "points", j, "address"),
                                f"{point.table} {space} {point.address + k} of {conn.describe} is already read by {other}",
                            )
                        )
                        break
                    registers[key] = f"{dev.id}.{point.metric}"
    problems.extend(_check_rules(cfg, room_ids))
    return problems


def _check_rules(cfg: Config, room_ids: set[str]) -> list[tuple[Loc, str]]:
    """Site rules name an existing device or room that measures their metric; names are unique."""
    problems: list[tuple[Loc, str]] = []
    devices = {d.id: d for d in cfg.devices}
    names: dict[str, int] = {}
    for i, rule in enumerate(cfg.rules):
        if rule.name in names:
            problems.append(
                (("rules", i, "name"), f"duplicate rule name {rule.name!r} (also rules[{names[rule.name]}])")
            )
        names.setdefault(rule.name, i)
        derived = rule.metric in DERIVED_METRICS
        if rule.device is not None:
            dev = devices.get(rule.device)
            if dev is None:
                known = ", ".join(sorted(devices)) or "none defined"
                problems.append(
                    (("rules", i, "device"), f"unknown device {rule.device!r} (devices: {known})")
                )
                continue
            if rule.room is not None and rule.room != dev.room:
                problems.append(
                    (("rules", i, "room"), f"device {dev.id!r} is in room {dev.room!r}, not {rule.room!r}")
                )
            measured = sorted(p.metric for p in dev.points)
            if not derived and rule.metric not in measured:
                problems.append(
                    (
                        ("rules", i, "metric"),
                        f"device {dev.id!r} has no point {rule.metric!r} (it measures {', '.join(measured)})",
                    )
                )
        elif rule.room is not None:
            if rule.room not in room_ids:
                known = ", ".join(sorted(room_ids)) or "none defined"
                problems.append((("rules", i, "room"), f"unknown room {rule.room!r} (rooms: {known})"))
                continue
            if not derived and rule.metric not in cfg.room_metrics(rule.room):
                problems.append(
                    (("rules", i, "metric"), f"no device in room {rule.room!r} measures {rule.metric!r}")
                )
    return problems


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read and validate devices.yaml; raise ConfigError listing every problem with its line."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(name, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    return parse_config(text, name, environ)


def parse_config(text: str, name: str = "devices.yaml", environ: dict[str, str] | None = None) -> Config:
    """Validate the text of a devices.yaml (``name`` is used in messages)."""
    reader = _Reader(name, dict(os.environ) if environ is None else environ)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([ConfigIssue(name, line, "", f"not valid YAML: {exc.problem or exc}")]) from None
    if node is None:
        data: Any = {}
    else:
        data = reader.build(node)
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigIssue(name, 1, "", "the file must be a mapping (site:, rooms:, devices:, ...)")]
        )
    cfg: Config | None = None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            line, loc = reader.line_of(tuple(err["loc"]))
            reader.issue(loc, line, _message(err))
    if cfg is not None:
        for loc, message in _cross_check(cfg):
            line, loc = reader.line_of(loc)
            reader.issue(loc, line, message)
    if reader.issues:
        reader.issues.sort(key=lambda i: i.line)
        raise ConfigError(reader.issues)
    assert cfg is not None
    return cfg
