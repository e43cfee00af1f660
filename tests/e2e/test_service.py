"""The running service, driven as a person would: `bafang check`, `bafang run`, `bafang demo`.

Real processes, a real pymodbus server, a real Mosquitto, HTTP over a real socket; SIGTERM to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collectors.sim_modbus import ModbusSimulator
from store.sqlite import SqliteReadingStore
from tests.conftest import MqttTestBroker

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def bafang() -> list[str]:
    """The installed `bafang` script, as the README runs it."""
    script = BIN / "bafang"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


async def eventually(check: Callable[[], Awaitable[Any]], limit: float, what: str) -> Any:
    """Await check() until it returns something truthy, or fail after timeout seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last: Any = None
    while loop.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = await check()
            if last:
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {limit:g} s waiting for {what} (last: {last!r})")


class Service:
    """A `bafang` process whose stdout gives the URL to open."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.output: list[str] = []
        self.url = ""

    async def wait_url(self, limit: float = 60.0) -> str:
        assert self.proc.stdout is not None

        async def read() -> str:
            assert self.proc.stdout is not None
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError("bafang exited early:\n" + "".join(self.output))
                line = raw.decode()
                self.output.append(line)
                if m := re.search(r"(http://127\.0\.0\.1:\d+/)", line):
                    return m.group(1)

        self.url = await asyncio.wait_for(read(), limit)
        return self.url

    async def drain(self) -> None:
        assert self.proc.stdout is not None
        self.output.append((await self.proc.stdout.read()).decode())

    async def stop(self, limit: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), limit)
        await self.drain()
        return code


@contextlib.asynccontextmanager
async def start(*args: str) -> AsyncIterator[Service]:
    proc = await asyncio.create_subprocess_exec(
        *bafang(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=ROOT
    )
    service = Service(proc)
    try:
        yield service
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_check_accepts_the_shipped_example_and_names_errors(tmp_path: Path) -> None:
    ok = subprocess.run(
        [*bafang(), "check", "devices.yaml"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "MQTT_PASSWORD": "x"}, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "devices.yaml: OK" in ok.stdout
    broken = tmp_path / "devices.yaml"
    broken.write_text(
        (ROOT / "tests/cases/float-type-typo/devices.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    bad = subprocess.run([*bafang(), "check", "-c", str(broken)], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert f"{broken}:9: devices[0].points[1].type: 'float' is not one of bool, uint16" in bad.stderr


async def test_run_collects_modbus_and_mqtt_and_flushes_on_sigterm(
    tmp_path: Path, mosquitto: MqttTestBroker
) -> None:
    sim = ModbusSimulator([1, 2], registers=20)
    modbus_port = await sim.start_tcp(0)
    await sim.set_registers(1, "holding", 0, [523, 215])  # RH 52.3 %, T 21.5 °C
    topic = f"e2e/{uuid.uuid4().hex[:8]}"
    config = tmp_path / "devices.yaml"
    config.write_text(
        f"""
site: {{name: 测试档案室}}
mqtt: {{url: "mqtt://{mosquitto.host}:{mosquitto.port}", client_id: "bafang-{topic[4:]}", protocol: "3.1.1"}}
storage:
  database: "sqlite:///{tmp_path}/bafang.db"
  # Nothing is written before SIGTERM: the test proves that stopping flushes what is buffered.
  timeseries: {{backend: sqlite, flush_interval: 1h, batch_size: 100000}}
rooms:
  - {{id: r1, name: 一号库房}}
devices:
  - id: th-1
    room: r1
    modbus: {{host: 127.0.0.1, port: {modbus_port}, unit: 1, timeout: 500ms}}
    poll: 1s
    points:
      - {{metric: humidity, address: 0, scale: 0.1}}
      - {{metric: temperature, address: 1, type: int16, scale: 0.1}}
  - id: bad-1
    room: r1
    modbus: {{host: 127.0.0.1, port: {modbus_port}, unit: 2, timeout: 500ms}}
    poll: 1s
    points:
      - {{metric: pm25, address: 50, table: input, type: float32}}
  - id: door-1
    room: r1
    mqtt: {{topic: {topic}/door-1}}
    points:
      - {{metric: door, path: contact, map: {{open: 1, closed: 0}}}}
  - id: th-9
    room: r1
    mqtt: {{topic: {topic}/th-9, time_path: ts}}
    points:
      - {{metric: temperature, path: t}}
      - {{metric: humidity, path: rh}}
""",
        encoding="utf-8",
    )
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{topic[4:]}")
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    try:
        async with start("run", "-c", str(config), "--port", "0") as service:
            url = await service.wait_url()
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:
                assert (await http.get("/healthz")).status_code == 200

                async def devices() -> dict[str, Any] | None:
                    by_id = {d["id"]: d for d in (await http.get("/api/v1/devices")).json()}
                    ok = by_id["th-1"]["status"] == "online" and by_id["bad-1"]["status"] == "faulty"
                    return by_id if ok else None

                by_id = await eventually(devices, 20, "th-1 online and bad-1 faulty")
                assert "exception" in by_id["bad-1"]["last_error"]

                publisher.publish(f"{topic}/door-1", json.dumps({"contact": "open"}), qos=1).wait_for_publish(
                    5
                )
                publisher.publish(f"{topic}/door-1", "{not json", qos=1).wait_for_publish(5)
                t0 = int(time.time()) - 3600  # an hour ago: inside the raw retention
                for i in range(300):
                    body = {"t": 20 + i / 100, "rh": 50.0 if i != 7 else 120.0, "ts": t0 + i}
                    publisher.publish(f"{topic}/th-9", json.dumps(body), qos=1)

                async def all_pending() -> bool:
                    # 300 T + 299 RH + the door + ≥ 2 Modbus polls, none written yet.
                    return bool((await http.get("/healthz")).json()["readings_pending"] >= 602)

                await eventually(all_pending, 20, "the MQTT readings to reach the pipeline")
                by_id = {d["id"]: d for d in (await http.get("/api/v1/devices")).json()}
                assert by_id["door-1"]["status"] == "online"
                # Rejections are counted when their batch is stored: nothing is yet.
                assert by_id["door-1"]["rejected"] == {} and by_id["th-9"]["rejected"] == {}
            assert await service.stop() == 0, "".join(service.output)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        await sim.stop()

    store = SqliteReadingStore(tmp_path / "readings.db")
    await store.open()
    try:
        temps = await store.history(device="th-9", metric="temperature", start=0, end=2e9)
        hums = await store.history(device="th-9", metric="humidity", start=0, end=2e9)
        assert len(temps) == 300 and len(hums) == 299
        latest = {(r.device, r.metric): r.value for r in await store.latest()}
        assert latest[("th-1", "humidity")] == pytest.approx(52.3)
        assert latest[("th-1", "temperature")] == pytest.approx(21.5)
        assert latest[("door-1", "door")] == 1.0
        assert ("bad-1", "pm25") not in latest
        counts = await store.rejection_counts()
        assert {reason: n for reason, (n, _, _) in counts["door-1"].items()} == {"malformed": 1}
        assert {reason: n for reason, (n, _, _) in counts["th-9"].items()} == {"out_of_range": 1}
        assert counts["bad-1"]["read_error"][0] >= 1
    finally:
        await store.close()


@contextlib.contextmanager
def port_1883_taken() -> Any:
    """Hold 127.0.0.1:1883 for the duration, unless another broker already does."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 1883))
        sock.listen(1)
    except OSError:
        pass  # already held, as on a machine running Mosquitto
    try:
        yield
    finally:
        sock.close()


async def test_demo_runs_with_nothing_installed_while_1883_is_taken(tmp_path: Path) -> None:
    with port_1883_taken():
        async with start("demo", "--port", "0", "--data", str(tmp_path)) as service:
            url = await service.wait_url()
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:

                async def everything() -> set[tuple[str, str]] | None:
                    latest = (await http.get("/api/v1/readings/latest")).json()
                    seen = {(r["device"], r["metric"]) for r in latest}
                    wanted = {
                        ("th-r1", "temperature"),  # Modbus TCP, int16
                        ("pm-r2", "pm25"),  # Modbus TCP, float32 CDAB
                        ("di-r3", "smoke"),  # Modbus discrete input
                        ("door-r1", "door"),  # MQTT JSON field mapped open/closed
                        ("leak-r1", "water_leak"),  # MQTT bare payload
                        ("th-r3a", "humidity"),  # MQTT wildcard topic naming the device
                    }
                    return seen if wanted <= seen else None

                await eventually(everything, 45, "readings from every kind of simulated device")
                latest = (await http.get("/api/v1/readings/latest", params={"device": "th-r1"})).json()
                values = {r["metric"]: r["value"] for r in latest}
                assert 10 < values["temperature"] < 35 and 30 < values["humidity"] < 80
                devices = {d["id"]: d["status"] for d in (await http.get("/api/v1/devices")).json()}
                assert devices["th-r1"] == "online" and "gw-r3" not in devices
                page = await http.get("/", follow_redirects=True)
                assert page.status_code == 200 and "八防" in page.text
            assert await service.stop() == 0, "".join(service.output)
