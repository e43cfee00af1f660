"""Installed devices: Modbus units and MQTT publishers, and their points."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from core.config.scalars import ByteOrder, DataType, Duration, Identifier, TableName, _Model
from core.metrics import METRICS


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
    # With device_id_segment: the most devices this entry stands for. A device id beyond it is rejected
    # (too_many_devices, counted for this entry and logged), so a misbehaving gateway or a topic flood
    # cannot grow Bafang's memory without bound.
    max_devices: Annotated[int, Field(ge=1, le=100_000)] = 1000
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
