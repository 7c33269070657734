"""A search's space, as a sweep file declares it (`search: optuna`), and the checks that need no
params: bounds, steps, log scales. Values against the params schema and the estimator are
checked by nbops.sweep.spec (`check_search`), before any kernel starts.

    space:
      model.params.max_depth: {type: int, low: 2, high: 12}            # step: 1 unless given
      model.params.ccp_alpha: {type: float, low: 1.0e-5, high: 0.1, log: true}
      model.params.criterion: {type: categorical, choices: [gini, entropy]}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class _Dimension(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class IntDimension(_Dimension):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)

    def problems(self) -> list[str]:
        if self.low > self.high:
            return [f"low {self.low} is above high {self.high}"]
        if (self.high - self.low) % self.step:
            return [f"high {self.high} - low {self.low} is not a multiple of step {self.step}"]
        return []

    def corners(self) -> list[Any]:
        return [self.low, self.high]


class FloatDimension(_Dimension):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    def problems(self) -> list[str]:
        for name, value in (("low", self.low), ("high", self.high)):
            if not math.isfinite(value):
                return [f"{name} {value} is not a finite number"]
        if self.low > self.high:
            return [f"low {self.low} is above high {self.high}"]
        if self.log and self.low <= 0:
            return [f"log: true needs bounds above 0, got low {self.low}"]
        return []

    def corners(self) -> list[Any]:
        return [float(self.low), float(self.high)]


Choice = str | int | float | bool | None


class CategoricalDimension(_Dimension):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    def problems(self) -> list[str]:
        seen = [json.dumps(c) for c in self.choices]
        repeated = sorted({c for c in seen if seen.count(c) > 1})
        return [f"choice {repeated[0]} is listed twice"] if repeated else []

    def corners(self) -> list[Any]:
        return list(self.choices)


Dimension = Annotated[IntDimension | FloatDimension | CategoricalDimension, Field(discriminator="type")]

# Every combination of the space's bounds and choices is validated when there are at most this
# many (each one is a params check and an estimator built, well under a millisecond); past it
# each key is checked on its own against the base, and a trial whose combination the estimator
# refuses is told failed without a kernel.
MAX_CORNERS = 512


@dataclass
class Search:
    """A validated `search: optuna` section."""

    space: dict[str, IntDimension | FloatDimension | CategoricalDimension]
    n_trials: int
    seed: int

    def distributions(self) -> dict[str, BaseDistribution]:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, BaseDistribution] = {}
        for key, dim in self.space.items():
            if isinstance(dim, IntDimension):
                out[key] = IntDistribution(dim.low, dim.high, step=dim.step)
            elif isinstance(dim, FloatDimension):
                out[key] = FloatDistribution(dim.low, dim.high, log=dim.log)
            else:
                out[key] = CategoricalDistribution(dim.choices)
        return out


def corner_overrides(space: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of each key's bounds (int, float) or choices (categorical), or [] when
    there are more than MAX_CORNERS."""
    import itertools

    corners = [dim.corners() for dim in space.values()]
    if math.prod(len(c) for c in corners) > MAX_CORNERS:
        return []
    return [dict(zip(space, combo, strict=True)) for combo in itertools.product(*corners)]
