"""devices.yaml: the shipped example loads, and every broken case gives its exact error lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, ModbusDevice, MqttDevice, load_config, parse_config, parse_duration

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted(p for p in (ROOT / "tests" / "cases").iterdir() if (p / "expected.txt").exists())


def test_shipped_example_loads() -> None:
    cfg = load_config(ROOT / "devices.yaml", environ={"MQTT_PASSWORD": "s3cret"})
    assert cfg.site.timezone == "Asia/Shanghai"
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)  # secrets never show in logs or reprs
    th1 = cfg.device("th-1")
    assert isinstance(th1, ModbusDevice)
    assert th1.poll == 30.0 and th1.modbus.bus == "192.168.10.21:502"
    assert [p.metric for p in th1.points] == ["humidity", "temperature"]
    assert th1.points[1].data_type == "int16" and th1.points[1].resolved_unit == "°C"
    th2 = cfg.device("th-2")
    assert isinstance(th2, ModbusDevice) and th2.protocol == "modbus-rtu"
    assert cfg.device("di-1").points[0].data_type == "bool"  # type: ignore[union-attr]
    family = cfg.device("r3-th")
    assert isinstance(family, MqttDevice) and family.mqtt.device_id_segment == 3


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_config_reports_every_error_with_its_line(case: Path) -> None:
    text = (case / "devices.yaml").read_text(encoding="utf-8")
    expected = (case / "expected.txt").read_text(encoding="utf-8").strip().splitlines()
    with pytest.raises(ConfigError) as info:
        parse_config(text, "devices.yaml", environ={})
    assert [str(i) for i in info.value.issues] == expected


def test_environment_default_and_substitution() -> None:
    text = 'mqtt: {url: "mqtt://${HOST:-localhost}:1883", username: "${USER_X}"}\n'
    cfg = parse_config(text, environ={"USER_X": "guard"})
    assert cfg.mqtt.url == "mqtt://localhost:1883"
    assert cfg.mqtt.username == "guard"


def test_duplicate_yaml_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("site: {name: a}\nsite: {name: b}\n", environ={})
    assert str(info.value.issues[0]) == "devices.yaml:2: site: duplicate key"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        (15, 15.0),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5s", "0s", True, "5 minutes"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_missing_file_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/devices.yaml")
    assert str(info.value).startswith("/nonexistent/devices.yaml:0: cannot read")
