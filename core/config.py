"""devices.yaml: pydantic models of the installation, and a loader whose errors point at a line.

Every error names the file, the line and the field, for example
``devices.yaml:42: devices[3].points[1].type: 'float' is not one of bool, uint16, int16, ...``.
Unknown keys are errors. ``${VAR}`` (or ``${VAR:-default}``) in any string is replaced by the
environment variable, so secrets never live in the file.
"""

from __future__ import annotations

import math
import os
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

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


class Room(_Model):
    """An archive room (库房)."""

    id: Identifier
    name: str
    kind: RoomKind = "paper"


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
