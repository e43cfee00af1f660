"""A Modbus simulator for tests, benchmarks and ``bafang demo``: pymodbus servers serving many units.

Each unit has coils, discrete inputs, holding and input registers from address 0 (reads past the end get
exception 2, illegal data address). Units can be made silent (no reply at all, as a dead transmitter on
an RS-485 line); ids that were never configured are silent too. Values are set from outside with
``set_registers`` / ``set_bits`` / ``set_value``; ``start_demo`` adds a task that drives several rooms'
transmitters with daily curves and occasional excursions.

pymodbus 3.16 deprecates ``ModbusServerContext`` / ``ModbusSequentialDataBlock``: this module uses
``SimDevice`` / ``SimData`` (non-shared blocks: four tables, bit addressing for coils and inputs).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from collectors.modbus import encode
from core.clock import Clock, SystemClock

_FC: Final[dict[str, int]] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class _Core(SimCore):
    """pymodbus' datastore, silent (no reply) for the units in ``silent`` and for unknown ids."""

    def __init__(self, devices: list[SimDevice], silent: set[int]) -> None:
        super().__init__(devices)
        self.silent = silent

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if device_id in self.silent or device_id not in self.devices:
            # With ignore_missing_devices=True the server then sends nothing, like a dead unit.
            raise NoSuchIdException(f"unit {device_id} is silent")
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        if device_id in self.silent or device_id not in self.devices:
            raise NoSuchIdException(f"unit {device_id} is silent")
        return await super().async_setValues(device_id, func_code, address, values)


def _placeholder() -> list[SimDevice]:
    # The server constructors insist on a datastore; ours replaces it right after.
    return [SimDevice(1, simdata=[SimData(0, values=[0], datatype=DataType.REGISTERS)])]


def _register_blocks(served: list[bool]) -> list[SimData]:
    blocks: list[SimData] = []
    start: int | None = None
    for address, ok in enumerate([*served, False]):
        if ok and start is None:
            start = address
        elif not ok and start is not None:
            blocks.append(SimData(start, values=[0] * (address - start), datatype=DataType.REGISTERS))
            start = None
    return blocks


class ModbusSimulator:
    """Many Modbus units behind one TCP port or one serial line."""

    def __init__(
        self,
        units: Iterable[int],
        *,
        registers: int = 100,
        bits: int = 64,
        holes: Sequence[tuple[int, int]] = (),
    ) -> None:
        """Units with ``registers`` holding and input registers and ``bits`` coils and inputs each.

        ``holes`` are (start, count) register ranges left unserved (exception 2), as on sparse devices.
        """
        self.units = sorted(set(units))
        if not self.units or not all(1 <= u <= 247 for u in self.units):
            raise ValueError(f"unit ids must be 1…247 (got {self.units})")
        nbits = max(16, (bits + 15) // 16 * 16)
        served = [True] * registers
        for start, count in holes:
            served[start : start + count] = [False] * len(served[start : start + count])
        if not any(served):
            raise ValueError("holes leave no register served")
        self.registers = registers
        self.bits = nbits
        self.silent: set[int] = set()
        devices = [
            SimDevice(
                unit,
                simdata=(
                    [SimData(0, values=[False] * nbits, datatype=DataType.BITS)],
                    [SimData(0, values=[False] * nbits, datatype=DataType.BITS)],
                    _register_blocks(served),
                    _register_blocks(served),
                ),
            )
            for unit in self.units
        ]
        self._core = _Core(devices, self.silent)
        self._server: Any = None
        self.port: int | None = None

    @property
    def running(self) -> bool:
        """Whether a server is serving."""
        return self._server is not None

    async def start_tcp(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve Modbus TCP on host:port (0 = a free port); returns the bound port."""
        if self._server is not None:
            raise RuntimeError("simulator already running")
        server = ModbusTcpServer(_placeholder(), address=(host, port), ignore_missing_devices=True)
        server.context = self._core
        await server.serve_forever(background=True)
        self._server = server
        listener: Any = server.transport
        self.port = int(listener.sockets[0].getsockname()[1])
        return self.port

    async def start_rtu(
        self, path: str, *, baudrate: int = 9600, parity: str = "N", stopbits: int = 1, bytesize: int = 8
    ) -> None:
        """Serve Modbus RTU (real framing and CRC) on a serial port, e.g. one end of a socat pty pair."""
        if self._server is not None:
            raise RuntimeError("simulator already running")
        server = ModbusSerialServer(
            _placeholder(),
            framer=FramerType.RTU,
            port=path,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            ignore_missing_devices=True,
        )
        server.context = self._core
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        """Stop serving (values are kept: a later start serves them again, as after a gateway reboot)."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    def set_silent(self, unit: int, silent: bool = True) -> None:
        """Make a unit stop (or resume) answering."""
        if silent:
            self.silent.add(unit)
        else:
            self.silent.discard(unit)

    def _runtime(self, unit: int) -> Any:
        try:
            return self._core.devices[unit]
        except KeyError:
            raise KeyError(f"unit {unit} is not simulated (units: {self.units})") from None

    async def set_registers(self, unit: int, table: str, address: int, values: Sequence[int]) -> None:
        """Write raw 16-bit words into a unit's holding or input registers."""
        if table not in ("holding", "input"):
            raise ValueError(f"{table!r} is not a register table (holding, input)")
        words = [int(v) & 0xFFFF for v in values]
        result = await self._runtime(unit).async_setValues(_FC[table], address, words)
        if result is not None:
            raise ValueError(f"unit {unit} {table} {address}×{len(words)}: outside 0…{self.registers - 1}")

    async def set_bits(self, unit: int, table: str, address: int, values: Sequence[bool | int]) -> None:
        """Write bits into a unit's coils or discrete inputs."""
        if table not in ("coil", "discrete"):
            raise ValueError(f"{table!r} is not a bit table (coil, discrete)")
        flags = [bool(v) for v in values]
        result = await self._runtime(unit).async_setValues(_FC[table], address, flags)
        if result is not None:
            raise ValueError(f"unit {unit} {table} {address}×{len(flags)}: outside 0…{self.bits - 1}")

    async def set_value(
        self,
        unit: int,
        table: str,
        address: int,
        value: float,
        data_type: str = "uint16",
        byte_order: str = "ABCD",
    ) -> None:
        """Write one typed value (encoded as a device would) at an address."""
        if table in ("coil", "discrete"):
            await self.set_bits(unit, table, address, [bool(value)])
        else:
            await self.set_registers(unit, table, address, encode(value, data_type, byte_order))

    async def get_registers(self, unit: int, table: str, address: int, count: int = 1) -> list[int]:
        """Read raw words back (what the server would answer)."""
        values = await self._runtime(unit).async_getValues(_FC[table], address, count)
        if not isinstance(values, list):
            raise ValueError(f"unit {unit} {table} {address}×{count}: {values!r}")
        return [int(v) for v in values]


# ---------------------------------------------------------------------------------------------
# The demo: several rooms' transmitters with daily curves and occasional excursions

DEMO_TH_UNIT: Final = 1  # Renke-style T/H: holding 0 = RH×10 (uint16), holding 1 = T×10 (int16)
DEMO_PM_UNIT: Final = 2  # dust: input 10–11 = PM2.5 float32, word-swapped (CDAB)
DEMO_DI_UNIT: Final = 3  # DI module: discrete 0 = smoke contact


def demo_units(room_index: int) -> tuple[int, int, int]:
    """Unit ids (T/H, PM2.5, DI) of the n-th demo room (0-based)."""
    base = 3 * room_index
    return base + DEMO_TH_UNIT, base + DEMO_PM_UNIT, base + DEMO_DI_UNIT


def demo_devices(rooms: Sequence[str], *, host: str, port: int, poll: str = "5s") -> list[dict[str, Any]]:
    """devices.yaml entries (as plain data) for the demo simulator's rooms."""
    out: list[dict[str, Any]] = []
    for i, room in enumerate(rooms):
        th, pm, di = demo_units(i)
        out += [
            {
                "id": f"th-{room}",
                "room": room,
                "name": "温湿度变送器",
                "modbus": {"host": host, "port": port, "unit": th, "timeout": "1s"},
                "poll": poll,
                "points": [
                    {"metric": "humidity", "address": 0, "table": "holding", "type": "uint16", "scale": 0.1},
                    {
                        "metric": "temperature",
                        "address": 1,
                        "table": "holding",
                        "type": "int16",
                        "scale": 0.1,
                    },
                ],
            },
            {
                "id": f"pm-{room}",
                "room": room,
                "name": "颗粒物传感器",
                "modbus": {"host": host, "port": port, "unit": pm, "timeout": "1s"},
                "poll": poll,
                "points": [
                    {
                        "metric": "pm25",
                        "address": 10,
                        "table": "input",
                        "type": "float32",
                        "byte_order": "CDAB",
                    }
                ],
            },
            {
                "id": f"di-{room}",
                "room": room,
                "name": "烟感开关量模块",
                "modbus": {"host": host, "port": port, "unit": di, "timeout": "1s"},
                "poll": poll,
                "points": [{"metric": "smoke", "address": 0, "table": "discrete"}],
            },
        ]
    return out


@dataclass
class _RoomState:
    t_bias: float
    rh_bias: float
    pm: float = 25.0
    excursion: str | None = None  # "damp" or "hot"
    excursion_start: float = 0.0
    excursion_length: float = 0.0
    smoke_until: float = 0.0
    noise: list[float] = field(default_factory=lambda: [0.0, 0.0])


class DemoDriver:
    """Moves the demo rooms' values: T 20 °C ± 1.5 and RH 52 % ± 4 over a day, excursions, PM2.5, smoke."""

    def __init__(
        self,
        sim: ModbusSimulator,
        rooms: int,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        utc_offset_hours: float = 8.0,
        excursions_per_hour: float = 2.0,
        smoke_per_day: float = 2.0,
    ) -> None:
        """Drive ``rooms`` demo rooms; excursions and smoke alarms are counted across all rooms."""
        self.sim = sim
        self.clock: Clock = clock or SystemClock()
        self.rng = random.Random(seed)
        self.utc_offset = utc_offset_hours * 3600.0
        self.excursions_per_hour = excursions_per_hour
        self.smoke_per_day = smoke_per_day
        self.rooms = [
            _RoomState(t_bias=self.rng.uniform(-0.6, 0.6), rh_bias=self.rng.uniform(-2.0, 2.0))
            for _ in range(rooms)
        ]
        self._last: float | None = None

    def values(self, index: int, now: float, dt: float) -> tuple[float, float, float, bool]:
        """Temperature, humidity, PM2.5 and smoke of room ``index`` at ``now`` (advancing its state by dt)."""
        room = self.rooms[index]
        rng = self.rng
        hour = ((now + self.utc_offset) % 86400.0) / 3600.0
        day = math.sin(2 * math.pi * (hour - 9.0) / 24.0)  # warmest mid-afternoon
        for k in (0, 1):
            room.noise[k] = 0.9 * room.noise[k] + rng.gauss(0.0, 0.03)
        t = 20.0 + room.t_bias + 1.5 * day + room.noise[0]
        rh = 52.0 + room.rh_bias - 4.0 * day + 10 * room.noise[1]
        if room.excursion is None and rng.random() < dt * self.excursions_per_hour / 3600.0 / max(
            1, len(self.rooms)
        ):
            room.excursion = rng.choice(("damp", "hot"))
            room.excursion_start = now
            room.excursion_length = rng.uniform(180.0, 600.0)
        if room.excursion is not None:
            progress = (now - room.excursion_start) / room.excursion_length
            if progress >= 1.0:
                room.excursion = None
            else:
                envelope = math.sin(math.pi * progress)  # up, hold, back down
                if room.excursion == "damp":
                    rh += (68.0 - rh) * envelope
                else:
                    t += (27.0 - t) * envelope
        # PM2.5: a mean-reverting walk around 25 µg/m³ with rare dusty spells.
        room.pm += 0.05 * (25.0 - room.pm) * dt + rng.gauss(0.0, 1.0) * math.sqrt(dt)
        if rng.random() < dt / 1800.0:
            room.pm += rng.uniform(20.0, 40.0)
        room.pm = min(max(room.pm, 3.0), 300.0)
        if now >= room.smoke_until and rng.random() < dt * self.smoke_per_day / 86400.0 / len(self.rooms):
            room.smoke_until = now + 30.0
        return t, rh, room.pm, now < room.smoke_until

    async def update(self) -> None:
        """Write the current values of every room into the simulator."""
        now = self.clock.now()
        dt = 1.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        for i in range(len(self.rooms)):
            t, rh, pm, smoke = self.values(i, now, dt)
            th, pm_unit, di = demo_units(i)
            await self.sim.set_registers(
                th, "holding", 0, [round(rh * 10), encode(round(t * 10), "int16")[0]]
            )
            await self.sim.set_value(pm_unit, "input", 10, pm, "float32", "CDAB")
            await self.sim.set_bits(di, "discrete", 0, [smoke])

    async def run(self, interval: float = 1.0) -> None:
        """Update every ``interval`` seconds until cancelled."""
        while True:
            await self.update()
            await asyncio.sleep(interval)


async def start_demo(
    rooms: Sequence[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    interval: float = 1.0,
    seed: int | None = None,
) -> tuple[ModbusSimulator, asyncio.Task[None], list[dict[str, Any]]]:
    """Start the demo simulator: returns it, its update task (cancel it, then ``stop()``) and the devices."""
    sim = ModbusSimulator(range(1, 3 * len(rooms) + 1))
    driver = DemoDriver(sim, len(rooms), seed=seed)
    await driver.update()
    bound = await sim.start_tcp(port, host)
    task = asyncio.create_task(driver.run(interval), name="modbus demo values")
    return sim, task, demo_devices(rooms, host=host, port=bound)
