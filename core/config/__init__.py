"""devices.yaml: pydantic models of the installation, and a loader whose errors point at a line.

Every error names the file, the line and the field, for example
``devices.yaml:42: devices[3].points[1].type: 'float' is not one of bool, uint16, int16, ...``.
Unknown keys are errors. ``${VAR}`` (or ``${VAR:-default}``) in any string is replaced by the
environment variable, so secrets never live in the file.

The package: ``scalars`` (durations, ids), ``schedule`` (access hours), ``thresholds`` (overrides of
the protections' defaults, site rules), ``devices`` (points and devices), ``site`` (site, broker,
storage, rooms, ``Config``), ``checks`` (checks across entries) and ``loader`` (YAML with line numbers).
"""

from core.config.checks import cross_check
from core.config.devices import (
    REGISTER_COUNT,
    Device,
    ModbusConnection,
    ModbusDevice,
    ModbusPoint,
    MqttDevice,
    MqttPoint,
    MqttSubscription,
)
from core.config.loader import ConfigError, ConfigIssue, format_loc, load_config, parse_config
from core.config.scalars import (
    ByteOrder,
    DataType,
    Duration,
    Identifier,
    NonNegative,
    RoomKind,
    TableName,
    parse_duration,
)
from core.config.schedule import DEFAULT_ACCESS_HOURS, AccessHours, Schedule, parse_access_hours
from core.config.site import Config, MqttBroker, Room, Site, Storage, Timeseries, Tls
from core.config.thresholds import (
    Band,
    DoorThresholds,
    FireThresholds,
    InsectThresholds,
    LightThresholds,
    Limit,
    MoldThresholds,
    MonitoringThresholds,
    Pollution,
    SiteRule,
    Swing,
    Thresholds,
)
from core.protections import (
    CLASSIC_EIGHT,
    DERIVED_METRICS,
    POLLUTANTS,
    PROTECTION_IDS,
    ProtectionId,
    default_protections,
)

__all__ = [
    "CLASSIC_EIGHT",
    "DEFAULT_ACCESS_HOURS",
    "DERIVED_METRICS",
    "POLLUTANTS",
    "PROTECTION_IDS",
    "REGISTER_COUNT",
    "AccessHours",
    "Band",
    "ByteOrder",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DataType",
    "Device",
    "DoorThresholds",
    "Duration",
    "FireThresholds",
    "Identifier",
    "InsectThresholds",
    "LightThresholds",
    "Limit",
    "ModbusConnection",
    "ModbusDevice",
    "ModbusPoint",
    "MoldThresholds",
    "MonitoringThresholds",
    "MqttBroker",
    "MqttDevice",
    "MqttPoint",
    "MqttSubscription",
    "NonNegative",
    "Pollution",
    "ProtectionId",
    "Room",
    "RoomKind",
    "Schedule",
    "Site",
    "SiteRule",
    "Storage",
    "Swing",
    "TableName",
    "Thresholds",
    "Timeseries",
    "Tls",
    "cross_check",
    "default_protections",
    "format_loc",
    "load_config",
    "parse_access_hours",
    "parse_config",
    "parse_duration",
]
