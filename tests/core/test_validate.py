"""The compiled per-point check of MQTT values gives exactly check_mqtt's verdicts."""

from __future__ import annotations

import math

import pytest

from core.config import MqttPoint
from core.validate import check_mqtt, mqtt_check

POINTS = [
    MqttPoint(metric="temperature", path="t"),
    MqttPoint(metric="humidity", path="rh", scale=0.1),
    MqttPoint(metric="temperature", path="t", scale=0.1, offset=-40, fault_codes=[]),
    MqttPoint(metric="pm25", path="pm", range=(0, 500), fault_codes=[-1]),
    MqttPoint(metric="door", path="contact", map={"open": 1, "closed": 0}),
    MqttPoint(metric="water_leak", path="leak"),
]
VALUES: list[object] = [
    20.5, 20, 0, -40, 85, 85.0001, -999, -9999.0, 0x7FFF, 65535, 600, -1, 1, True, False,
    math.nan, math.inf, -math.inf, 10**400, "open", "closed", "20.5", None, {}, [], 19.300000000000001,
]  # fmt: skip


@pytest.mark.parametrize("point", POINTS, ids=lambda p: f"{p.metric}-{p.path}")
def test_the_compiled_check_agrees_with_check_mqtt(point: MqttPoint) -> None:
    check = mqtt_check(point)
    for value in VALUES:
        assert check(value) == check_mqtt(point, value), (point, value)
