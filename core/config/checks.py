"""Checks that span entries of devices.yaml: unique ids, known rooms, no register read twice, one
setting per serial line, rules."""

from __future__ import annotations

from collections.abc import Callable

from core.config.devices import ModbusConnection, ModbusDevice
from core.config.site import Config
from core.protections import DERIVED_METRICS

Loc = tuple[str | int, ...]

# What an RS-485 line is set to, in the order serial_line prints it.
LINE_SETTINGS = ("baudrate", "bytesize", "parity", "stopbits")


def serial_line(conn: ModbusConnection) -> str:
    """A serial line's settings as installers write them, e.g. ``9600 8N1``."""
    return f"{conn.baudrate} {conn.bytesize}{conn.parity}{conn.stopbits}"


def cross_check(cfg: Config, line_of: Callable[[Loc], int] | None = None) -> list[tuple[Loc, str]]:
    """Checks that span entries: unique ids, known rooms, no register read by two points, one setting
    per serial line. ``line_of`` gives the file line of a loc, to name where the other entry is."""
    problems: list[tuple[Loc, str]] = []
    lines: dict[str, tuple[int, ModbusDevice]] = {}  # serial path → the first device on it
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
            if conn.serial is not None:
                problem = _same_line(i, dev, lines.setdefault(conn.serial, (i, dev)), line_of)
                if problem is not None:
                    problems.append(problem)
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


def _same_line(
    i: int, dev: ModbusDevice, first: tuple[int, ModbusDevice], line_of: Callable[[Loc], int] | None
) -> tuple[Loc, str] | None:
    """Devices on one serial port share its settings: the port is opened once, with the first's."""
    k, other = first
    if k == i:
        return None
    for key in LINE_SETTINGS:
        if getattr(dev.modbus, key) != getattr(other.modbus, key):
            where = f"line {line_of(('devices', k, 'modbus', 'serial'))}" if line_of else f"devices[{k}]"
            return (
                ("devices", i, "modbus", key),
                f"{dev.modbus.serial} is already used at {serial_line(other.modbus)} by {other.id} "
                f"({where}); devices on one RS-485 line share its settings",
            )
    return None


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
            if derived:
                # The engine derives it per room (rules/engine.py, device "climate"): a rule that names a
                # device would never find it, and stay unknown for ever.
                problems.append(
                    (
                        ("rules", i, "device"),
                        f"{rule.metric!r} is derived per room, not measured by a device: "
                        f"write room: {dev.room} instead of device: {dev.id}",
                    )
                )
                continue
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
            elif derived and not any(
                d.room == rule.room and {"temperature", "humidity"} <= {p.metric for p in d.points}
                for d in cfg.devices
            ):
                # The engine derives it from one device's temperature and humidity (rules/engine.py
                # climate_sources): without such a device the series never exists and the rule stays unknown.
                problems.append(
                    (
                        ("rules", i, "metric"),
                        f"{rule.metric!r} is derived from the temperature and humidity of one device, "
                        f"and no device in room {rule.room!r} measures both",
                    )
                )
    return problems
