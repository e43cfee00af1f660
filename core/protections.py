"""The protection vocabulary (八防 and more): ids, their names, and which are shown for a room.

One place for what config, rules and the API call a protection. No single official "八防" list
exists; the classic eight follow 机关档案工作业务建设规范 (fire, theft, damp, heat, light, dust, insects,
rodents), and JGJ 25-2010 §5.1.1 adds water, pests (mold) and pollution. "monitoring" is Bafang's own:
a sensor that went silent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

ProtectionId = Literal[
    "fire",
    "theft",
    "damp",
    "temperature",
    "light",
    "dust",
    "insects",
    "rodents",
    "water",
    "mold",
    "pollution",
    "monitoring",
]
PROTECTION_IDS: tuple[str, ...] = get_args(ProtectionId)

# Protection id → (zh-CN name, English name), in display order.
PROTECTIONS: dict[str, tuple[str, str]] = {
    "fire": ("防火", "Fire"),
    "theft": ("防盗", "Theft"),
    "damp": ("防潮", "Damp"),
    "temperature": ("防高温", "Heat"),
    "light": ("防光", "Light"),
    "dust": ("防尘", "Dust"),
    "insects": ("防虫", "Insects"),
    "rodents": ("防鼠", "Rodents"),
    "water": ("防水", "Water"),
    "mold": ("防霉", "Mold"),
    "pollution": ("防污染", "Pollution"),
    "monitoring": ("监测中断", "Monitoring lost"),
}
assert tuple(PROTECTIONS) == PROTECTION_IDS, "every protection id has its names, in the same order"

CLASSIC_EIGHT: tuple[str, ...] = PROTECTION_IDS[:8]
POLLUTANTS: tuple[str, ...] = ("co2", "hcho", "tvoc", "so2", "no2", "o3")
# Metrics that the rules engine derives per room from its temperature and humidity; site rules may use them.
DERIVED_METRICS: tuple[str, ...] = ("mold_risk",)


def default_protections(metrics: Iterable[str]) -> tuple[str, ...]:
    """The protections shown for a room with these metrics: the classic eight, plus water, mold and
    pollution where it has those sensors, and monitoring (always)."""
    have = set(metrics)
    extra: list[str] = []
    if "water_leak" in have:
        extra.append("water")
    if {"temperature", "humidity"} <= have or "mold_risk" in have:
        extra.append("mold")  # the mold risk is derived from the room's temperature and humidity
    if have.intersection(POLLUTANTS):
        extra.append("pollution")
    return (*CLASSIC_EIGHT, *extra, "monitoring")
