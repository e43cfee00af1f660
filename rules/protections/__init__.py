"""The protections (八防 and more): a registry from protection id to its module.

Each module has ``ID``, ``INPUTS`` (the metrics it reads), ``DEFAULTS`` (its threshold table, citing
its source clause), ``params(kind, overrides)`` (defaults for the room kind with the merged site + room
overrides of devices.yaml applied) and a pure ``evaluate(view, params, now) -> list[Condition]``.
Site rules (devices.yaml ``rules:``) are evaluated by ``site_rules.evaluate``.

Typical use by the engine, once per room at start-up and then per evaluation::

    params = room_params(cfg, room_id)                 # {protection id: its params}
    for pid, p in params.items():
        conditions += REGISTRY[pid].evaluate(view, p, now)
    conditions += site_rules.evaluate(view, cfg.rules_of(room_id), now)
"""

from __future__ import annotations

from typing import Any, Protocol

from core.config import Config, Thresholds
from core.protections import PROTECTIONS
from rules.model import Condition, RoomView
from rules.protections import (
    damp,
    dust,
    fire,
    insects,
    light,
    mold,
    monitoring,
    pollution,
    rodents,
    site_rules,
    temperature,
    theft,
    water,
)


class Protection(Protocol):
    """What every protection module provides."""

    ID: str
    INPUTS: tuple[str, ...]

    def params(self, kind: str, overrides: Thresholds) -> Any:
        """The effective thresholds for a room of this kind."""
        ...

    def evaluate(self, view: RoomView, thresholds: Any, now: float) -> list[Condition]:
        """The conditions of this protection in this room now."""
        ...


REGISTRY: dict[str, Protection] = {
    m.ID: m
    for m in (
        fire,
        theft,
        damp,
        temperature,
        light,
        dust,
        insects,
        rodents,
        water,
        mold,
        pollution,
        monitoring,
    )
}
assert set(REGISTRY) == set(PROTECTIONS), "every protection id has exactly one module"


def room_params(cfg: Config, room_id: str) -> dict[str, Any]:
    """{protection id: effective thresholds} for the protections shown in a room, in display order.

    Raises ValueError naming the room when the merged overrides contradict the defaults (for example a
    room's humidity min above the kind's max).
    """
    room = cfg.room_of(room_id)
    overrides = cfg.thresholds_of(room_id)
    out: dict[str, Any] = {}
    for pid in cfg.protections_of(room_id):
        try:
            out[pid] = REGISTRY[pid].params(room.kind, overrides)
        except ValueError as exc:
            raise ValueError(f"room {room_id} ({room.name}): thresholds of {pid}: {exc}") from None
    return out


def check_config(cfg: Config) -> list[str]:
    """Problems that only show once overrides meet the defaults, one message per room and protection."""
    problems: list[str] = []
    for room in cfg.rooms:
        try:
            room_params(cfg, room.id)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def evaluate_room(view: RoomView, params: dict[str, Any], now: float) -> list[Condition]:
    """All conditions of the given protections (``room_params``) for one room view."""
    out: list[Condition] = []
    for pid, p in params.items():
        out.extend(REGISTRY[pid].evaluate(view, p, now))
    return out


__all__ = ["REGISTRY", "Protection", "check_config", "evaluate_room", "room_params", "site_rules"]
