"""Modbus collector: polls Modbus TCP gateways and RTU lines, decodes registers, hands readings to a Sink.

Shape (as Home Assistant's ``ModbusHub``): one hub per physical bus (``host:port`` or serial path), each
with one pymodbus async client and one lock; every pymodbus call goes through ``_Hub.read`` and nothing
of pymodbus leaves this module. A transport failure (timeout, connection refused or lost) marks only the
device being read OFFLINE; a device's exception reply marks it FAULTY; the other units on the bus carry on.

Decisions about pymodbus 3.16 (read from its source, ``transaction/transaction.py``):
- pymodbus retries a request itself and, after ``retries + 3`` unanswered requests in a row on a
  connection, closes a TCP connection ("CLOSING CONNECTION"), whichever unit was silent. We pass
  ``retries=0``, enforce the per-device timeout ourselves with ``asyncio.timeout`` (pymodbus' own timeout
  is set longer, as a safety net, so its counter never runs) and do the retries here. A bus is dropped
  and reconnected only when *no* unit on it has answered for ``_STALE_AFTER`` requests in a row.
- ``reconnect_delay=0`` switches off pymodbus' own reconnect task; the hub reconnects on demand with
  backoff (1 s doubling to 60 s, on the injected clock), so a rebooted gateway is picked up without restart.
- pymodbus logs every timeout at ERROR with a frame dump; we log once per device state change instead,
  so its logger is raised to CRITICAL unless the user configured it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from core.clock import Clock, SystemClock
from core.config import ModbusConnection, ModbusDevice, ModbusPoint
from core.config.checks import LINE_SETTINGS, serial_line
from core.types import DeviceStatus, Reading, Reason, Rejection, Sink
from core.validate import check_modbus

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Decoding

# data type → (struct format of the big-endian value, registers it spans)
DECODE: Final[dict[str, tuple[str, int]]] = {
    "uint16": ("H", 1),
    "int16": ("h", 1),
    "uint32": ("I", 2),
    "int32": ("i", 2),
    "float32": ("f", 2),
    "uint64": ("Q", 4),
    "int64": ("q", 4),
    "float64": ("d", 4),
}
# byte order → (words reversed, bytes swapped inside each word). ABCD is the Modbus convention
# (big-endian words, most significant word first); CDAB = word swap; BADC = byte swap; DCBA = little-endian.
BYTE_ORDERS: Final[dict[str, tuple[bool, bool]]] = {
    "ABCD": (False, False),
    "CDAB": (True, False),
    "BADC": (False, True),
    "DCBA": (True, True),
}
_WORDS: Final[dict[tuple[int, bool], struct.Struct]] = {
    (n, swap): struct.Struct(("<" if swap else ">") + "H" * n) for n in (1, 2, 4) for swap in (False, True)
}
_VALUES: Final[dict[str, struct.Struct]] = {t: struct.Struct(">" + f) for t, (f, _) in DECODE.items()}


Unpack = Callable[[Sequence[int] | Sequence[bool]], float]


def _bit(bits: Sequence[int] | Sequence[bool]) -> float:
    return 1.0 if bits[0] else 0.0


@functools.cache
def decoder(data_type: str, byte_order: str = "ABCD") -> Unpack:
    """The function from a value's registers (or its bit) to its raw number, tables looked up once."""
    if data_type == "bool":
        return _bit
    count = DECODE[data_type][1]
    reverse, swap = BYTE_ORDERS[byte_order]
    pack, unpack = _WORDS[(count, swap)].pack, _VALUES[data_type].unpack

    def registers_to_number(registers: Sequence[int] | Sequence[bool]) -> float:
        if len(registers) < count:
            raise ValueError(f"{data_type} needs {count} registers, got {len(registers)}")
        words = registers[count - 1 :: -1] if reverse else registers[:count]
        return float(unpack(pack(*words))[0])

    return registers_to_number


def decode(point: ModbusPoint, registers: Sequence[int] | Sequence[bool]) -> float:
    """The raw number in a point's registers (or its bit), before scale, offset and validation."""
    try:
        return decoder(point.data_type, point.byte_order)(registers)
    except ValueError as exc:
        raise ValueError(f"{point.metric}: {exc}") from None


def encode(value: float, data_type: str, byte_order: str = "ABCD") -> list[int]:
    """The registers a device sends for a raw value: the inverse of ``decode`` (for simulators and tests)."""
    if data_type == "bool":
        return [1 if value else 0]
    fmt, count = DECODE[data_type]
    number: float | int = value if fmt in ("f", "d") else int(value)
    reverse, swap = BYTE_ORDERS[byte_order]
    words = list(_WORDS[(count, swap)].unpack(_VALUES[data_type].pack(number)))
    return words[::-1] if reverse else words


# ---------------------------------------------------------------------------------------------
# Request planning

MAX_REGISTERS: Final = 125  # Modbus limit for FC 03/04
MAX_BITS: Final = 2000  # Modbus limit for FC 01/02
MAX_GAP: Final = 8  # unused registers (or bits) worth reading to save a round trip
_BIT_TABLES: Final = frozenset({"coil", "discrete"})


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One Modbus read: a table, a start address, a count, and the points it serves."""

    table: str
    address: int
    count: int
    points: tuple[ModbusPoint, ...]

    @property
    def describe(self) -> str:
        """For messages, e.g. ``holding 0×2``."""
        return f"{self.table} {self.address}×{self.count}"

    @property
    def has_gaps(self) -> bool:
        """Whether the request also reads addresses no point asked for."""
        return sum(p.count for p in self.points) < self.count


def plan_reads(
    points: Sequence[ModbusPoint],
    *,
    max_gap: int = MAX_GAP,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
) -> list[ReadRequest]:
    """Group points by table into as few reads as possible (adjacent or nearly adjacent, within limits)."""
    by_table: dict[str, list[ModbusPoint]] = {}
    for p in points:
        by_table.setdefault(p.table, []).append(p)
    requests: list[ReadRequest] = []
    for table in ("holding", "input", "coil", "discrete"):
        group = sorted(by_table.get(table, ()), key=lambda p: (p.address, p.count))
        limit = max_bits if table in _BIT_TABLES else max_registers
        start = end = -1  # end is exclusive
        members: list[ModbusPoint] = []
        for p in group:
            p_end = p.address + p.count
            if members and p.address <= end + max_gap and max(end, p_end) - start <= limit:
                end = max(end, p_end)
                members.append(p)
                continue
            if members:
                requests.append(ReadRequest(table, start, end - start, tuple(members)))
            start, end, members = p.address, p_end, [p]
        if members:
            requests.append(ReadRequest(table, start, end - start, tuple(members)))
    return requests


# ---------------------------------------------------------------------------------------------
# The bus hub: the one place that talks to pymodbus

EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
# A gateway answering 0x0A / 0x0B means the unit behind it is silent: offline, not faulty.
_GATEWAY_SILENT: Final = frozenset({10, 11})
# table → (function code, the pymodbus client method that reads it)
_READS: Final[dict[str, tuple[int, str]]] = {
    "coil": (1, "read_coils"),
    "discrete": (2, "read_discrete_inputs"),
    "holding": (3, "read_holding_registers"),
    "input": (4, "read_input_registers"),
}
_STALE_AFTER: Final = 3  # unanswered requests in a row (any unit) before a TCP connection is renewed
RECONNECT_MIN: Final = 1.0
RECONNECT_MAX: Final = 60.0


class ReadError(Exception):
    """A read produced no values; ``status`` says what it means for the device."""

    def __init__(self, text: str, status: DeviceStatus, code: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.status = status
        self.code = code


def default_client_factory(connection: ModbusConnection, *, timeout: float) -> Any:
    """A pymodbus async client for a bus: TCP for ``host``, RTU framing for ``serial``."""
    if connection.serial is not None:
        return AsyncModbusSerialClient(
            connection.serial,
            framer=FramerType.RTU,
            baudrate=connection.baudrate,
            bytesize=connection.bytesize,
            parity=connection.parity,
            stopbits=connection.stopbits,
            timeout=timeout,
            retries=0,
            reconnect_delay=0,
        )
    assert connection.host is not None
    return AsyncModbusTcpClient(
        connection.host, port=connection.port, timeout=timeout, retries=0, reconnect_delay=0
    )


class _Hub:
    """One physical bus: one client, one lock, reconnect with backoff, RTU inter-frame gap."""

    def __init__(
        self, connection: ModbusConnection, timeout: float, factory: Callable[..., Any], clock: Clock
    ) -> None:
        self.bus = connection.bus
        self.connection = connection
        self.rtu = connection.serial is not None
        self.lock = asyncio.Lock()
        self._timeout = timeout  # the longest device timeout on this bus
        self._factory = factory
        self._clock = clock
        self._client: Any = None
        self._retry_at = 0.0
        self._delay = RECONNECT_MIN
        self._connect_error: str | None = None
        self._unanswered = 0
        # 3.5 character times of silence between RTU frames, at least 5 ms for slow RS-485 adapters.
        bits_per_char = 1 + connection.bytesize + (connection.parity != "N") + connection.stopbits
        self._gap = max(3.5 * bits_per_char / connection.baudrate, 0.005) if self.rtu else 0.0
        self._quiet_until = 0.0  # loop time before which the RTU line must stay silent

    async def _ensure_connected(self, conn: ModbusConnection) -> Any:
        client = self._client
        if client is not None and client.connected:
            return client
        now = self._clock.monotonic()
        if now < self._retry_at:
            raise ReadError(self._connect_error or f"cannot connect to {self.bus}", DeviceStatus.OFFLINE)
        if client is None:
            # pymodbus' own timeout is a safety net only: ours (asyncio.timeout) fires first.
            client = self._client = self._factory(self.connection, timeout=2 * self._timeout + 1.0)
            if hasattr(client, "set_max_no_responses"):
                client.set_max_no_responses(1 << 30)
        ok = False
        reason = "refused or unreachable"
        try:
            async with asyncio.timeout(max(conn.timeout, 1.0)):
                ok = bool(await client.connect())
        except TimeoutError:
            reason = "timeout"
        except (OSError, ModbusException) as exc:
            reason = str(exc) or type(exc).__name__
        if ok:
            if self._connect_error is not None:
                log.info("bus %s: connected again", self.bus)
            self._connect_error = None
            self._delay = RECONNECT_MIN
            self._retry_at = 0.0
            self._unanswered = 0
            return client
        error = f"cannot connect to {self.bus}: {reason}"
        if self._connect_error is None:
            log.warning("bus %s: %s; retrying with backoff up to %g s", self.bus, error, RECONNECT_MAX)
        self._connect_error = error
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, RECONNECT_MAX)
        with_close(client)
        raise ReadError(error, DeviceStatus.OFFLINE)

    def _drop(self) -> None:
        if self._client is not None:
            with_close(self._client)

    async def read(self, conn: ModbusConnection, request: ReadRequest) -> list[int] | list[bool]:
        """Values of one request to the unit ``conn`` names, or ReadError. The caller holds ``lock``."""
        client = self._client
        if client is None or not client.connected:
            client = await self._ensure_connected(conn)
        fc, method = _READS[request.table]
        call = getattr(client, method)
        timeout = conn.timeout
        gap = self._gap
        loop = asyncio.get_running_loop() if gap else None
        rr: Any = None
        for _attempt in range(conn.retries + 1):
            if loop is not None:
                wait = self._quiet_until - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                async with asyncio.timeout(timeout):
                    rr = await call(request.address, count=request.count, device_id=conn.unit)
            except TimeoutError:
                continue
            except ModbusException as exc:
                self._drop()
                raise ReadError(f"read {request.describe}: {exc}", DeviceStatus.OFFLINE) from None
            except Exception as exc:  # a pymodbus or OS failure must not stop the poller
                self._drop()
                raise ReadError(
                    f"read {request.describe}: {type(exc).__name__}: {exc}", DeviceStatus.OFFLINE
                ) from None
            finally:
                if loop is not None:
                    self._quiet_until = loop.time() + gap
            break
        else:
            what = f"read {request.describe}"
            if not client.connected:
                self._unanswered = 0
                raise ReadError(f"{what}: connection to {self.bus} lost", DeviceStatus.OFFLINE)
            self._unanswered += 1
            if self._unanswered >= _STALE_AFTER and not self.rtu:
                # Nobody on this gateway answers: the connection may be half-open; renew it.
                self._unanswered = 0
                self._drop()
            raise ReadError(f"{what}: timeout (no answer within {timeout:g} s)", DeviceStatus.OFFLINE)
        self._unanswered = 0
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            status = DeviceStatus.OFFLINE if code in _GATEWAY_SILENT else DeviceStatus.FAULTY
            raise ReadError(f"read {request.describe}: exception {code} {name}", status, code)
        values: list[int] | list[bool] = rr.bits if fc <= 2 else rr.registers
        # On RTU there is no transaction id: a late reply to an earlier request must not pass as this one.
        if rr.function_code != fc or len(values) < request.count or (fc > 2 and len(values) != request.count):
            raise ReadError(
                f"read {request.describe}: mismatched reply (function {rr.function_code}, {len(values)} values)",
                DeviceStatus.OFFLINE,
            )
        return values

    def close(self) -> None:
        """Close the client."""
        self._drop()


def with_close(client: Any) -> None:
    """Close a client, ignoring errors of a connection that is already gone."""
    try:
        client.close()
    except Exception as exc:  # closing a broken transport may raise; nothing to recover
        log.debug("closing client failed: %s", exc)


# ---------------------------------------------------------------------------------------------
# The collector


class _Device:
    """What the collector keeps per device: its plan, the last state told to the sink, rejection streaks."""

    __slots__ = ("all_rejected", "device", "error", "hub", "label", "plan", "status", "streaks")

    def __init__(self, device: ModbusDevice, hub: _Hub) -> None:
        self.device = device
        self.hub = hub
        self.label = f"device {device.id} ({device.modbus.describe})"
        self.plan = [(r, _slots(r)) for r in plan_reads(device.points)]
        self.status = DeviceStatus.UNKNOWN
        self.error: str | None = None
        self.all_rejected = False  # the status is FAULTY because every value of the last poll was rejected
        # metric → rejected values by reason since its streak began; logged on the streak's two edges only
        self.streaks: dict[str, Counter[Reason]] = {}


# A point's place in its request's reply, compiled once: (point, first, end, how to decode it, unit).
_Slot = tuple[ModbusPoint, int, int, Unpack, str]


def _slots(request: ReadRequest) -> tuple[_Slot, ...]:
    return tuple(
        (
            p,
            p.address - request.address,
            p.address - request.address + p.count,
            decoder(p.data_type, p.byte_order),
            p.resolved_unit,
        )
        for p in request.points
    )


def _quiet_pymodbus() -> None:
    pm = logging.getLogger("pymodbus")
    if pm.level == logging.NOTSET:
        pm.setLevel(logging.CRITICAL)


class ModbusCollector:
    """Polls Modbus devices on their intervals and hands readings, rejections and status edges to a sink."""

    def __init__(
        self,
        devices: Sequence[ModbusDevice],
        sink: Sink,
        *,
        clock: Clock | None = None,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._sink = sink
        self._clock: Clock = clock or SystemClock()
        factory = client_factory or default_client_factory
        timeouts: dict[str, float] = {}
        for d in devices:
            timeouts[d.modbus.bus] = max(timeouts.get(d.modbus.bus, 0.0), d.modbus.timeout)
        self._hubs: dict[str, _Hub] = {}
        self._devices: dict[str, _Device] = {}
        first: dict[str, ModbusDevice] = {}
        for d in devices:
            bus = d.modbus.bus
            hub = self._hubs.get(bus)
            if hub is None:
                hub = self._hubs[bus] = _Hub(d.modbus, timeouts[bus], factory, self._clock)
                first[bus] = d
            elif hub.rtu and any(getattr(d.modbus, k) != getattr(hub.connection, k) for k in LINE_SETTINGS):
                # One serial port has one set of line settings; core/config/checks.py refuses such a file.
                raise ValueError(
                    f"device {d.id}: {bus} is already used at {serial_line(hub.connection)} by "
                    f"{first[bus].id}; devices on one RS-485 line share its settings"
                )
            self._devices[d.id] = _Device(d, hub)
        self._closed = False
        _quiet_pymodbus()

    @property
    def device_ids(self) -> list[str]:
        """The ids of the devices this collector polls."""
        return list(self._devices)

    def schedule(self, scheduler: Any) -> dict[str, tuple[str, ...]]:
        """Add one interval job per bus and poll interval to an APScheduler 3 AsyncIOScheduler.

        A job polls its bus's devices one after another: they share the bus's lock anyway, and one job
        per bus costs the scheduler one dispatch per interval instead of one per device. The jobs of one
        interval start together, at once, so the buses are polled side by side: while one gateway answers,
        the event loop serves the others' replies in the same wake-up. Returns the job ids and the
        devices each polls, in order.
        """
        groups: dict[tuple[str, float], list[str]] = {}
        for dev_id, state in self._devices.items():
            groups.setdefault((state.hub.bus, state.device.poll), []).append(dev_id)
        # APScheduler runs on the real clock, so the start date is taken from it too.
        start = datetime.now(UTC)
        jobs: dict[str, tuple[str, ...]] = {}
        for (bus, interval), ids in groups.items():
            job_id = f"modbus:{bus}@{interval:g}s"
            jobs[job_id] = tuple(ids)
            scheduler.add_job(
                self.poll_bus,
                trigger="interval",
                seconds=interval,
                start_date=start,
                next_run_time=start,  # a first poll at once, not an interval after start-up
                args=[jobs[job_id]],
                id=job_id,
                name=f"modbus poll {bus} every {interval:g} s ({len(ids)} devices)",
                coalesce=True,
                max_instances=1,
                # Later than one interval, the next run is due anyway.
                misfire_grace_time=max(1, round(interval)),
                replace_existing=True,
            )
        return jobs

    async def poll_bus(self, device_ids: Sequence[str]) -> None:
        """Poll devices of one bus one after another (the job ``schedule`` adds)."""
        for device_id in device_ids:
            if self._closed:
                return
            await self.poll(device_id)

    async def poll(self, device_id: str) -> None:
        """Read one device once and report readings, rejections and any status change to the sink."""
        if self._closed:
            return
        state = self._devices[device_id]
        hub = state.hub
        conn = state.device.modbus
        results: list[tuple[ReadRequest, tuple[_Slot, ...], list[int] | list[bool]]] = []
        failure: ReadError | None = None
        async with hub.lock:
            pending = state.plan
            i = 0
            while i < len(pending):
                request, slots = pending[i]
                i += 1
                try:
                    values = await hub.read(conn, request)
                except ReadError as err:
                    if err.code == 2 and request.has_gaps:
                        # The device refuses the unused registers we merged in: read its points exactly.
                        exact = [(r, _slots(r)) for r in plan_reads(request.points, max_gap=0)]
                        log.info(
                            "%s: %s; reading its points in %d requests", state.label, err.text, len(exact)
                        )
                        state.plan = [e for e in state.plan if e[0] is not request] + exact
                        pending = [*pending[:i], *exact, *pending[i:]]
                        continue
                    failure = failure or err
                    if err.status is DeviceStatus.OFFLINE:
                        break  # a silent unit: don't hold the bus for its other requests
                    continue
                results.append((request, slots, values))
        self._report(state, results, failure)

    def _report(
        self,
        state: _Device,
        results: list[tuple[ReadRequest, tuple[_Slot, ...], list[int] | list[bool]]],
        failure: ReadError | None,
    ) -> None:
        """Decode and check what a poll read; hand readings, rejections and the status to the sink."""
        now = self._clock.now()
        device = state.device
        dev_id, room = device.id, device.room
        readings: list[Reading] = []
        rejected: list[Rejection] = []
        streaks = state.streaks
        started: list[tuple[ReadRequest, ModbusPoint, Reason, str]] = []
        ended: list[tuple[str, Counter[Reason]]] = []
        for request, slots, values in results:
            for point, first, end, unpack, unit in slots:
                verdict = check_modbus(point, unpack(values[first:end]))
                if isinstance(verdict, tuple):
                    reason, detail = verdict
                    rejected.append(Rejection(dev_id, point.metric, reason, detail, now))
                    streak = streaks.get(point.metric)
                    if streak is None:
                        streaks[point.metric] = Counter((reason,))
                        started.append((request, point, reason, detail))
                    else:
                        streak[reason] += 1
                else:
                    readings.append(Reading(dev_id, room, point.metric, verdict, unit, now))
                    if streaks and point.metric in streaks:
                        ended.append((point.metric, streaks.pop(point.metric)))
        sink = self._sink
        if readings:
            sink.submit(readings)
        for rejection in rejected:
            sink.reject(rejection)
        if failure is not None:
            sink.reject(Rejection(dev_id, None, Reason.READ_ERROR, failure.text, now))
            status, error = failure.status, failure.text
        elif readings:
            status, error = DeviceStatus.ONLINE, None
        else:
            # It answered, but nothing it said is usable (fault codes, NaN, out of range).
            status, error = DeviceStatus.FAULTY, f"no valid value: {rejected[0].detail}"
        all_rejected = failure is None and not readings
        if started or ended:
            self._log_streaks(state, started, ended, status, all_rejected)
        if status is not state.status or error != state.error:
            # A status edge that only follows from values rejected, or valid again, was told by those lines.
            told = status is not state.status and (
                (all_rejected and bool(started))
                or (status is DeviceStatus.ONLINE and state.all_rejected and bool(ended))
            )
            self._set_status(state, status, error, now, told=told)
        state.all_rejected = all_rejected

    def _log_streaks(
        self,
        state: _Device,
        started: list[tuple[ReadRequest, ModbusPoint, Reason, str]],
        ended: list[tuple[str, Counter[Reason]]],
        status: DeviceStatus,
        all_rejected: bool,
    ) -> None:
        """One line when a point's values start being rejected, one when they are valid again."""
        edge = status is not state.status
        for n, (request, point, reason, detail) in enumerate(started, 1):
            text = detail.removeprefix(f"{point.metric}: ")
            where = f"{request.table} {point.address}"
            tail = "; no valid value left: faulty" if edge and all_rejected and n == len(started) else ""
            log.warning(
                "%s: %s (%s) rejected: %s (%s)%s", state.label, point.metric, where, text, reason.value, tail
            )
        recovered = edge and status is DeviceStatus.ONLINE and state.all_rejected
        for n, (metric, streak) in enumerate(ended, 1):
            reasons = ", ".join(
                r.value if len(streak) == 1 else f"{r.value} {c}" for r, c in streak.most_common()
            )
            tail = "; back online" if recovered and n == len(ended) else ""
            log.info(
                "%s: %s valid again after %d rejected (%s)%s",
                state.label,
                metric,
                streak.total(),
                reasons,
                tail,
            )

    def _set_status(
        self, state: _Device, status: DeviceStatus, error: str | None, now: float, *, told: bool = False
    ) -> None:
        if status is state.status and error == state.error:
            return
        previous = state.status
        state.status, state.error = status, error
        self._sink.status(state.device.id, status, error, now)
        if told or status is previous:
            log.debug("%s: %s (%s)", state.label, error, status.value)
        elif status is DeviceStatus.ONLINE:
            if previous is not DeviceStatus.UNKNOWN:
                log.info("%s: back online", state.label)
        else:
            log.warning("%s: %s (%s)", state.label, error, status.value)

    async def close(self) -> None:
        """Close every bus connection; later polls do nothing."""
        self._closed = True
        for hub in self._hubs.values():
            hub.close()
