"""Thresholds: overrides of the protections' defaults, and the site's own rules.

rules/protections/*.py hold the defaults and cite their sources. Every key is optional: what is not
given comes from the site's ``thresholds:``, then from the protection's default for the room's kind.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from core.config.scalars import Duration, Identifier, NonNegative, _Model, parse_duration
from core.metrics import METRICS
from core.protections import DERIVED_METRICS, ProtectionId


class _Overrides(_Model):
    """A group of threshold overrides; None = not set here."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def merged(self, base: Self | None) -> Self:
        """These overrides on top of ``base`` (the site's): what is set here wins, key by key."""
        if base is None:
            return self
        values: dict[str, Any] = {}
        for name in type(self).model_fields:
            own, theirs = getattr(self, name), getattr(base, name)
            if isinstance(own, _Overrides) and isinstance(theirs, _Overrides):
                values[name] = own.merged(theirs)
            else:
                values[name] = own if own is not None else theirs
        return type(self).model_construct(**values)


class Band(_Overrides):
    """A climate band (humidity in %RH, temperature in °C): alert outside [min, max] for ``for``."""

    min: float | None = None
    max: float | None = None
    for_: Duration | None = Field(None, alias="for")  # hold: how long outside before the alert fires
    clear: NonNegative | None = None  # hysteresis: back inside by this much before it clears
    clear_for: Duration | None = None  # ... and for this long
    critical: float | None = None  # at or above: critical instead of warning
    critical_low: float | None = None  # at or below: critical

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"min must be below max (got min {self.min:g}, max {self.max:g})")
        if self.critical is not None and self.max is not None and self.critical < self.max:
            raise ValueError(
                f"critical must not be below max (got critical {self.critical:g}, max {self.max:g})"
            )
        if self.critical_low is not None and self.min is not None and self.critical_low > self.min:
            raise ValueError(
                f"critical_low must not be above min (got critical_low {self.critical_low:g}, min {self.min:g})"
            )
        return self


class Swing(_Overrides):
    """Daily fluctuation: max − min over the rolling 24 h."""

    max: Annotated[float, Field(gt=0)] | None = None
    for_: Duration | None = Field(None, alias="for")
    clear: NonNegative | None = None
    clear_for: Duration | None = None


class FireThresholds(_Overrides):
    """Fire pre-alarm from a room's temperature (advisory: a T/H transmitter is not a heat detector)."""

    rate: Annotated[float, Field(gt=0)] | None = None  # °C per minute
    window: Annotated[float, Field(ge=10, le=600), BeforeValidator(parse_duration)] | None = None
    max_temperature: float | None = None  # °C


class DoorThresholds(_Overrides):
    """Door contacts: how long a door may stand open inside access hours."""

    open_max: Duration | None = None


class LightThresholds(_Overrides):
    """Light while closed, and UV."""

    closed_lux: NonNegative | None = None  # above this outside access hours = light left on
    uv_max: NonNegative | None = None  # µW/lm
    for_: Duration | None = Field(None, alias="for")
    clear_for: Duration | None = None


class Limit(_Overrides):
    """An upper limit (dust: on the 24 h mean; pollutants: on the value held for ``for``)."""

    max: NonNegative | None = None
    for_: Duration | None = Field(None, alias="for")
    clear_for: Duration | None = None
    critical: NonNegative | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Limit:
        if self.critical is not None and self.max is not None and self.critical < self.max:
            raise ValueError(
                f"critical must not be below max (got critical {self.critical:g}, max {self.max:g})"
            )
        return self


class Pollution(_Overrides):
    """Per-pollutant limits."""

    co2: Limit | None = None
    hcho: Limit | None = None
    tvoc: Limit | None = None
    so2: Limit | None = None
    no2: Limit | None = None
    o3: Limit | None = None


class InsectThresholds(_Overrides):
    """Insect-favourable climate: T above and RH above, persisting for ``for``."""

    temperature: float | None = None
    humidity: float | None = None
    for_: Duration | None = Field(None, alias="for")
    clear_for: Duration | None = None


class MoldThresholds(_Overrides):
    """Mold risk factor (accumulated time above the germination isopleth; 1 = germination expected)."""

    max: Annotated[float, Field(gt=0)] | None = None
    clear_for: Duration | None = None
    # Days above the germination isopleth after which germination is expected (risk factor 1).
    days_to_germination: Annotated[float, Field(gt=0, le=3650)] | None = None


class MonitoringThresholds(_Overrides):
    """Monitoring lost: no valid reading for this many poll intervals (or a point's stale_after)."""

    missed_intervals: Annotated[int, Field(ge=1, le=1000)] | None = None


class Thresholds(_Overrides):
    """Overrides of the protections' defaults, site-wide (top-level ``thresholds:``) or per room."""

    humidity: Band | None = None
    temperature: Band | None = None
    humidity_swing: Swing | None = None
    temperature_swing: Swing | None = None
    fire: FireThresholds | None = None
    door: DoorThresholds | None = None
    light: LightThresholds | None = None
    pm25: Limit | None = None
    pm10: Limit | None = None
    insects: InsectThresholds | None = None
    pollution: Pollution | None = None
    mold: MoldThresholds | None = None
    monitoring: MonitoringThresholds | None = None


class SiteRule(_Model):
    """A site's own rule, e.g. {name: 恒温恒湿机停机, device: ac-1, metric: power, below: 1, for: 5m}."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Annotated[str, Field(min_length=1, max_length=64)]
    device: Identifier | None = None
    room: Identifier | None = None
    metric: str
    above: float | None = None
    below: float | None = None
    for_: Duration | None = Field(None, alias="for")
    clear: float | None = None  # the level at which it clears (default: the trigger level itself)
    clear_for: Duration | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    protection: ProtectionId

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS and value not in DERIVED_METRICS:
            known = ", ".join(sorted((*METRICS, *DERIVED_METRICS)))
            raise ValueError(f"{value!r} is not a known metric ({known})")
        return value

    @model_validator(mode="after")
    def _shape(self) -> SiteRule:
        if self.device is None and self.room is None:
            raise ValueError("a rule needs device: or room:")
        if (self.above is None) == (self.below is None):
            raise ValueError("a rule needs exactly one of above: or below:")
        if self.clear is not None:
            if self.above is not None and self.clear > self.above:
                raise ValueError(f"clear {self.clear:g} must not be above the trigger level {self.above:g}")
            if self.below is not None and self.clear < self.below:
                raise ValueError(f"clear {self.clear:g} must not be below the trigger level {self.below:g}")
        return self
