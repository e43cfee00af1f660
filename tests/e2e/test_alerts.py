"""Alerts on the running service: sensor events in, alarms and alerts out through the API, people's
acknowledgements and resolutions, and an alert hold that survives `kill -9`.

Real `bafang run -c … --port 0` processes, a real pymodbus server (ModbusSimulator) for the T/H
transmitter and the smoke contact, a real MQTT broker (the session's ``mosquitto``) for the leak sensor,
HTTP over a real socket. Waits poll the API with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from collectors.sim_modbus import ModbusSimulator
from tests.conftest import MqttTestBroker
from tests.e2e.test_service import ROOT, Service, bafang, eventually

TH_UNIT, DI_UNIT = 1, 2
HOLD = 6.0  # the humidity override's `for:` in seconds
# How late after its hold an alert may fire: the next stored batch (poll 500 ms, flush 100 ms) or the
# 5 s rules tick evaluates it; on a busy 2-core machine allow a little more than one poll.
FIRE_LAG = 2.0


def write_config(tmp_path: Path, broker: MqttTestBroker, modbus_port: int, tag: str) -> Path:
    """A room with a T/H transmitter and a smoke contact on Modbus, and a leak sensor on MQTT."""
    config = tmp_path / "devices.yaml"
    protocol = "3.1.1" if broker.kind == "amqtt" else "5"  # amqtt (the fallback) speaks MQTT 3.1.1 only
    config.write_text(
        f"""
site: {{name: 测试档案室, timezone: Asia/Shanghai}}
mqtt: {{url: "mqtt://{broker.host}:{broker.port}", client_id: "bafang-{tag}", protocol: "{protocol}"}}
storage:
  database: "sqlite:///{tmp_path}/bafang.db"
  timeseries: {{backend: sqlite, path: "{tmp_path}/readings.db", flush_interval: 100ms}}
rooms:
  - id: r1
    name: 一号库房
    kind: paper
    # A short hold so that a restart can land inside it.
    thresholds: {{humidity: {{max: 58, for: {HOLD:g}s}}}}
# No stale_after: a killed or restarted service leaves a gap in the readings, and a restart must not
# take that gap for silent sensors (every device gets its missed intervals again from the start).
devices:
  - id: th-1
    room: r1
    modbus: {{host: 127.0.0.1, port: {modbus_port}, unit: {TH_UNIT}, timeout: 500ms}}
    poll: 500ms
    points:
      - {{metric: humidity, address: 0, scale: 0.1}}
      - {{metric: temperature, address: 1, type: int16, scale: 0.1}}
  - id: di-1
    room: r1
    modbus: {{host: 127.0.0.1, port: {modbus_port}, unit: {DI_UNIT}, timeout: 500ms}}
    poll: 500ms
    points:
      - {{metric: smoke, address: 0, table: discrete}}
  - id: leak-1
    room: r1
    mqtt: {{topic: e2e/{tag}/leak-1}}
    points:
      - {{metric: water_leak, path: state, map: {{leak: 1, dry: 0}}}}
""",
        encoding="utf-8",
    )
    return config


class Bafang:
    """A running `bafang run` process, its output pumped so that the pipe never fills."""

    def __init__(self, service: Service, http: httpx.AsyncClient) -> None:
        self.service = service
        self.http = http
        self._pump: asyncio.Task[None] | None = None

    @property
    def output(self) -> str:
        """What the process printed so far."""
        return "".join(self.service.output)

    def pump(self) -> None:
        """Keep reading the process's output in the background."""

        async def run() -> None:
            stdout = self.service.proc.stdout
            assert stdout is not None
            while line := await stdout.readline():
                self.service.output.append(line.decode(errors="replace"))

        self._pump = asyncio.create_task(run())

    async def finish(self, limit: float = 30.0) -> int:
        """Wait for the process to end (after a signal); its exit code."""
        code = await asyncio.wait_for(self.service.proc.wait(), limit)
        if self._pump is not None:
            await asyncio.wait_for(self._pump, limit)
        return code

    async def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        self.service.proc.send_signal(signal.SIGKILL)
        assert await self.finish() == -signal.SIGKILL

    async def stop(self) -> int:
        """SIGTERM, as an operator stops it; the exit code."""
        self.service.proc.send_signal(signal.SIGTERM)
        return await self.finish()

    async def get(self, path: str, **params: Any) -> Any:
        """GET an API path; the decoded JSON (fails on a non-2xx answer)."""
        r = await self.http.get(path, params=params)
        r.raise_for_status()
        return r.json()

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST JSON to an API path."""
        return await self.http.post(path, json=body)

    async def protection(self, protection: str) -> dict[str, Any]:
        """One protection of room r1."""
        found = [p for p in await self.get("/api/v1/protections", room="r1") if p["protection"] == protection]
        assert len(found) == 1, found
        return dict(found[0])

    async def alerts(self, **params: Any) -> list[dict[str, Any]]:
        """GET /api/v1/alerts with these filters."""
        return list(await self.get("/api/v1/alerts", **params))


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Bafang]:
    """`bafang run -c config --port 0`, with an HTTP client on its URL; killed if the test fails."""
    proc = await asyncio.create_subprocess_exec(
        *bafang(),
        "run",
        "-c",
        str(config),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    service = Service(proc)
    try:
        url = await service.wait_url(30)
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            app = Bafang(service, http)
            app.pump()
            yield app
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextlib.contextmanager
def publisher(broker: MqttTestBroker, tag: str) -> Iterator[paho.Client]:
    """A connected MQTT client standing for the leak sensor."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"leak-{tag}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.loop_stop()
        client.disconnect()


def leak(client: paho.Client, tag: str, state: str) -> None:
    """The leak sensor reports its state, retained as such sensors do (so it reaches a late subscriber)."""
    info = client.publish(f"e2e/{tag}/leak-1", json.dumps({"state": state}), qos=1, retain=True)
    info.wait_for_publish(5)


def epoch(iso: str) -> float:
    """An API timestamp as epoch seconds."""
    return datetime.fromisoformat(iso).timestamp()


async def start_simulator(rh: float, t: float, smoke: bool) -> tuple[ModbusSimulator, int]:
    """The T/H transmitter (holding 0 = RH×10, 1 = T×10) and the DI module (discrete 0 = smoke)."""
    sim = ModbusSimulator([TH_UNIT, DI_UNIT], registers=8, bits=16)
    port = await sim.start_tcp(0)
    await sim.set_registers(TH_UNIT, "holding", 0, [round(rh * 10), round(t * 10)])
    await sim.set_bits(DI_UNIT, "discrete", 0, [smoke])
    return sim, port


async def test_leak_and_smoke_raise_alarms_that_people_acknowledge_and_resolve(
    tmp_path: Path, mosquitto: MqttTestBroker
) -> None:
    sim, port = await start_simulator(rh=50.0, t=20.0, smoke=False)
    tag = uuid.uuid4().hex[:8]
    config = write_config(tmp_path, mosquitto, port, tag)
    try:
        with publisher(mosquitto, tag) as sensor:
            async with running(config) as app:

                async def state_is(protection: str, state: str) -> dict[str, Any] | None:
                    p = await app.protection(protection)
                    return p if p["state"] == state else None

                async def active(protection: str) -> list[dict[str, Any]]:
                    return await app.alerts(state="active", protection=protection)

                # Quiet room: smoke and climate polled and normal, nothing open.
                await eventually(lambda: state_is("fire", "ok"), 15, "fire ok once the DI module is polled")
                await eventually(lambda: state_is("damp", "ok"), 15, "damp ok once the T/H is polled")
                assert await app.alerts(state="active") == []

                # A leak over MQTT: 防水 in alarm, one critical alert firing at once.
                leak(sensor, tag, "leak")
                water = await eventually(lambda: state_is("water", "alarm"), 15, "water alarm")
                assert water["name_zh"] == "防水" and "漏水" in water["reason"]
                (leak_alert,) = await eventually(lambda: active("water"), 5, "an active water alert")
                assert {k: leak_alert[k] for k in ("rule", "room", "device", "severity", "state")} == {
                    "rule": "leak",
                    "room": "r1",
                    "device": "leak-1",
                    "severity": "critical",
                    "state": "firing",
                }
                assert leak_alert["fired_at"] == leak_alert["started_at"]

                # Smoke on the DI module's discrete input: 防火 in alarm.
                await sim.set_bits(DI_UNIT, "discrete", 0, [True])
                fire = await eventually(lambda: state_is("fire", "alarm"), 15, "fire alarm")
                assert "烟感报警" in fire["reason"]
                (smoke,) = await eventually(lambda: active("fire"), 5, "an active fire alert")
                assert (smoke["rule"], smoke["device"], smoke["severity"], smoke["state"]) == (
                    "smoke",
                    "di-1",
                    "critical",
                    "firing",
                )

                # Someone takes charge of the smoke alarm; the protection stays in alarm meanwhile.
                acked = await app.post(
                    f"/api/v1/alerts/{smoke['id']}/ack", {"by": "张三", "comment": "已到现场"}
                )
                assert acked.status_code == 200, acked.text
                assert (acked.json()["state"], acked.json()["acknowledged_by"]) == ("acknowledged", "张三")
                again = await app.post(f"/api/v1/alerts/{smoke['id']}/ack", {"by": "李四"})
                assert again.status_code == 409, again.text
                assert (await app.protection("fire"))["state"] == "alarm"

                # The leak stops: a contact event clears as soon as the contact is back to normal.
                leak(sensor, tag, "dry")
                await eventually(lambda: state_is("water", "ok"), 15, "water ok once the leak is dry")
                (dried,) = await app.alerts(state="resolved", protection="water")
                assert dried["id"] == leak_alert["id"]
                assert (dried["resolved_by"], dried["resolve_reason"]) == ("system", "已恢复正常")
                assert await active("water") == []

                # Resolved by hand while the detector still reports smoke: the room is still in danger,
                # so a new alert opens (at once: smoke has no hold).
                resolved = await app.post(
                    f"/api/v1/alerts/{smoke['id']}/resolve", {"by": "张三", "reason": "探头积尘，已清洁"}
                )
                assert resolved.status_code == 200, resolved.text
                body = resolved.json()
                assert (body["state"], body["resolved_by"], body["resolve_reason"]) == (
                    "resolved",
                    "张三",
                    "探头积尘，已清洁",
                )

                async def reopened() -> list[dict[str, Any]]:
                    return [a for a in await active("fire") if a["id"] != smoke["id"]]

                (again_smoke,) = await eventually(reopened, 15, "a new smoke alert while smoke persists")
                assert again_smoke["state"] == "firing" and again_smoke["rule"] == "smoke"

                # The detector goes quiet: the new alert resolves by itself and 防火 is back to ok.
                await sim.set_bits(DI_UNIT, "discrete", 0, [False])
                await eventually(lambda: state_is("fire", "ok"), 15, "fire ok once the smoke is gone")
                assert await app.alerts(state="active") == []
                history = await app.alerts()  # every alert but cancelled pending ones, newest first
                assert [(a["protection"], a["state"], a["resolved_by"]) for a in history] == [
                    ("fire", "resolved", "system"),
                    ("fire", "resolved", "张三"),
                    ("water", "resolved", "system"),
                ]
                assert await app.stop() == 0, app.output
    finally:
        with publisher(mosquitto, tag) as sensor:  # leave no retained message behind on the broker
            sensor.publish(f"e2e/{tag}/leak-1", b"", qos=1, retain=True).wait_for_publish(5)
        await sim.stop()


async def test_a_hold_survives_kill_9_and_fires_on_time_with_nothing_duplicated_or_lost(
    tmp_path: Path, mosquitto: MqttTestBroker
) -> None:
    # RH 63 %: above the 58 % override, below the 70 % critical level and the insects' 65 %; steady from
    # the first poll, so that no 24 h swing alert joins in.
    sim, port = await start_simulator(rh=63.0, t=20.0, smoke=True)
    config = write_config(tmp_path, mosquitto, port, uuid.uuid4().hex[:8])
    try:
        async with running(config) as first:

            async def pending() -> list[dict[str, Any]]:
                return await first.alerts(state="pending", protection="damp")

            async def smoke_firing() -> list[dict[str, Any]]:
                return await first.alerts(state="firing", protection="fire")

            (smoke,) = await eventually(smoke_firing, 15, "the smoke alert firing")
            (hold,) = await eventually(pending, 15, "the humidity alert pending")
            assert (hold["rule"], hold["device"], hold["fired_at"]) == ("humidity_high", "th-1", None)
            started = epoch(hold["started_at"])
            # Kill half-way through the hold, so that "started + hold" and "restart + hold" are further
            # apart than the evaluation lag: the scenario's timing, not a wait for something.
            await asyncio.sleep(max(0.0, started + HOLD / 2 - time.time()))
            assert [a["id"] for a in await pending()] == [hold["id"]], "fired before the kill"
            await first.kill()

        restarted = time.time()
        async with running(config) as second:
            assert "alert book: 2 open alerts loaded" in second.output, second.output

            async def fired() -> list[dict[str, Any]]:
                return await second.alerts(state="firing", protection="damp")

            (alert,) = await eventually(fired, HOLD + 15, "the humidity alert firing after the restart")
            # The same alert, its hold counted from when it began, not from the restart.
            assert (alert["id"], alert["started_at"], alert["rule"]) == (
                hold["id"],
                hold["started_at"],
                "humidity_high",
            )
            took = epoch(alert["fired_at"]) - started
            assert HOLD - 0.01 <= took <= HOLD + FIRE_LAG, f"fired {took:.2f} s after it started"
            assert took < (restarted - started) + HOLD, (
                f"fired {took:.2f} s after it started: counted from the restart "
                f"({restarted - started:.2f} s after it started)"
            )
            assert alert["severity"] == "warning" and alert["threshold"] == 58.0

            # Nothing lost: the smoke alert from before the kill is still open, same id and start.
            everything = await second.alerts()
            by_id = {a["id"]: a for a in everything}
            assert by_id[smoke["id"]]["state"] == "firing"
            assert by_id[smoke["id"]]["started_at"] == smoke["started_at"]
            # Nothing duplicated: one alert per identity, nothing cancelled along the way.
            identities = Counter((a["protection"], a["rule"], a["room"], a["device"]) for a in everything)
            assert identities == {
                ("fire", "smoke", "r1", "di-1"): 1,
                ("damp", "humidity_high", "r1", "th-1"): 1,
            }, everything
            assert await second.alerts(state="cancelled") == []
            states = {p["protection"]: p["state"] for p in await second.get("/api/v1/protections", room="r1")}
            assert (states["fire"], states["damp"]) == ("alarm", "warning")
            assert await second.stop() == 0, second.output
    finally:
        await sim.stop()


async def test_a_restart_and_a_reload_raise_no_alert(tmp_path: Path, mosquitto: MqttTestBroker) -> None:
    # A quiet room, polled every 500 ms: three missed polls (1.5 s) would be "monitoring lost".
    sim, port = await start_simulator(rh=50.0, t=20.0, smoke=False)
    tag = uuid.uuid4().hex[:8]
    config = write_config(tmp_path, mosquitto, port, tag)
    try:
        async with running(config) as first:

            async def polled() -> bool:
                latest = await first.get("/api/v1/readings/latest", device="th-1")
                return len(latest) == 2

            await eventually(polled, 15, "th-1 polled")
            assert await first.stop() == 0, first.output
        await asyncio.sleep(3.0)  # down for twice the monitoring window: the stored readings are old
        async with running(config) as second:

            async def fresh() -> bool:
                latest = await second.get("/api/v1/readings/latest", device="th-1")
                return bool(latest) and all(time.time() - epoch(r["time"]) < 1.5 for r in latest)

            await eventually(fresh, 15, "fresh readings after the restart")
            await asyncio.sleep(2.0)  # more than the monitoring window since the restart, polls flowing
            assert await second.alerts() == [], "a restart raised an alert"
            assert await second.alerts(state="cancelled") == []
            # A reload with a changed configuration: the room gets a new name.
            text = config.read_text(encoding="utf-8")
            config.write_text(text.replace("一号库房", "一号档案库房"), encoding="utf-8")
            second.service.proc.send_signal(signal.SIGHUP)

            async def reloaded() -> bool:
                rooms = await second.get("/api/v1/rooms")
                return bool(rooms) and rooms[0]["name"] == "一号档案库房"

            await eventually(reloaded, 20, "the reloaded configuration")
            await asyncio.sleep(2.0)
            assert await second.alerts() == [], "a reload raised an alert"
            assert await second.alerts(state="cancelled") == []
            # A configuration with a mistake is refused, and the service goes on as it was.
            text = config.read_text(encoding="utf-8")
            config.write_text(text.replace("kind: paper", "kind: papper"), encoding="utf-8")
            second.service.proc.send_signal(signal.SIGHUP)

            async def refused() -> bool:
                return "reload refused" in second.output

            await eventually(refused, 20, "the refused reload")
            assert (await second.get("/api/v1/rooms"))[0]["name"] == "一号档案库房"
            assert await second.get("/healthz")
            assert await second.stop() == 0, second.output
    finally:
        await sim.stop()
