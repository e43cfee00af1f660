"""The metric vocabulary: every reading names one of these metrics, and the rules rely on the names.

Each metric has a default unit, whether it is a binary state (a contact: 0 or 1) and the
plausible range of a working sensor. A value outside the range is a sensor or wiring fault: it is
rejected and counted, never clamped and never stored. Temperature (−40…85 °C) and humidity (0–100 %RH)
are the ranges of the common RS-485 transmitters; the other ranges are the measuring ranges of typical
archive-room sensors and can be overridden per point with `range: [min, max]`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Metric:
    """One entry of the vocabulary."""

    name: str
    unit: str
    low: float
    high: float
    binary: bool = False
    zh: str = ""
    en: str = ""


def _binary(name: str, zh: str, en: str) -> Metric:
    return Metric(name, "", 0.0, 1.0, binary=True, zh=zh, en=en)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("temperature", "°C", -40.0, 85.0, zh="温度", en="Temperature"),
        Metric("humidity", "%RH", 0.0, 100.0, zh="相对湿度", en="Relative humidity"),
        Metric("dew_point", "°C", -60.0, 85.0, zh="露点", en="Dew point"),
        Metric("light", "lux", 0.0, 200_000.0, zh="照度", en="Illuminance"),
        Metric("uv", "µW/lm", 0.0, 10_000.0, zh="紫外线", en="UV"),
        Metric("pm25", "µg/m³", 0.0, 1_000.0, zh="PM2.5", en="PM2.5"),
        Metric("pm10", "µg/m³", 0.0, 1_000.0, zh="PM10", en="PM10"),
        Metric("co2", "ppm", 0.0, 10_000.0, zh="二氧化碳", en="CO₂"),
        Metric("hcho", "mg/m³", 0.0, 10.0, zh="甲醛", en="Formaldehyde"),
        Metric("tvoc", "mg/m³", 0.0, 50.0, zh="总挥发性有机物", en="TVOC"),
        Metric("so2", "µg/m³", 0.0, 10_000.0, zh="二氧化硫", en="SO₂"),
        Metric("no2", "µg/m³", 0.0, 10_000.0, zh="二氧化氮", en="NO₂"),
        Metric("o3", "µg/m³", 0.0, 10_000.0, zh="臭氧", en="O₃"),
        Metric("power", "W", 0.0, 1_000_000.0, zh="功率", en="Power"),
        Metric("voltage", "V", 0.0, 1_000.0, zh="电压", en="Voltage"),
        Metric("battery", "%", 0.0, 100.0, zh="电量", en="Battery"),
        Metric("pest", "count", 0.0, 100_000.0, zh="虫情", en="Pest count"),
        _binary("smoke", "烟感", "Smoke"),
        _binary("fire", "火警", "Fire alarm"),
        _binary("door", "门磁", "Door"),
        _binary("water_leak", "漏水", "Water leak"),
        _binary("rodent", "鼠情", "Rodent"),
        _binary("intrusion", "入侵", "Intrusion"),
        _binary("running", "运行", "Running"),
    )
}


def metric(name: str) -> Metric:
    """The vocabulary entry for a metric name; KeyError names the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}") from None
