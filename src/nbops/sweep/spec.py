"""Parameter sweeps: many params sets through the same runner, on a local pool or on Dask.

A sweep file (`params/sweeps/*.yaml`) names a base params file and the overrides to try, as
dotted keys:

    name: trees                       # optional; default: the file's stem
    base: params/default.yaml
    grid:                             # every combination; a list of grids expands each one
      model.params.max_depth: [2, 4, 8]
      model.params.min_samples_leaf: [1, 5]
    points:                           # explicit override sets, added after the grid's
      - {model.name: random_forest, model.params.n_estimators: 50}

Every point is merged into the base and validated once (params schema, hyperparameter names
and values; `make_points`) before anything runs: a bad point stops the sweep naming the point
and the key. The validated params travel with the point (`Point.valid`); the runner in the
point's worker process validates the params file it is given, as for any run.

Or `search: optuna` with a `space`, `n_trials` and `seed` (nbops.sweep.space, nbops.sweep.search):
the space is checked here (`check_search`), each trial when it is asked.

Each point runs the train and evaluate notebooks through `run_pipeline` in its own
`build/sweeps/<name>/<point>/` folder (so the cache works per point: an unchanged point is
skipped), as an MLflow child run of one parent run for the sweep, tagged with its overrides,
with `promote: false`. The best point by the gate's metric then goes through the same gate
(`decide_promotion` + `apply_decision`) as a normal run, unless promotion is off (pull requests).

Executors: a local pool of worker processes bounded by the cores (default), or Dask
distributed when a scheduler address is given. A worker that dies fails its point only.

The tracking URI can carry credentials (`postgresql://user:password@host/db`), and the sweep's
folders are uploaded as CI artifacts: no point spec, record, log or report holds it. A local
worker gets it in its environment; a Dask task gets it as an argument only when it carries no
credentials, else the worker must have it in its own environment (checked against the
credential-free form). Reasons and logs are scrubbed of it in case an error message quotes it.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nbops.exceptions import NbopsError
from nbops.layout import sweep_build_dir, sweep_reports_dir
from nbops.params import Params, params_hash, parse_params, read_yaml
from nbops.sweep.space import Dimension, Search, corner_overrides

# Keys a point may not override: the sweep decides promotion, and every point must be scored on
# the same held-out rows and registered under the same name for the ranking and the gate to be fair.
FIXED_KEYS = {
    "promote": "the sweep decides promotion",
    "data": "every point must be scored on the same held-out rows",
    "split": "every point must be scored on the same held-out rows",
    "registry": "every point must register the same model",
}
RANK_METRIC = "macro_f1"  # the gate's default metric (nbops.ml.gate.PRIMARY_METRIC)


def rank_metric(sweep: Sweep) -> str:
    """The metric points (and a search's trials) are ranked by: the gate's (`gate.metric`,
    which the points share), from the first point or else the base."""
    valid = sweep.points[0].valid if sweep.points else parse_params(sweep.base_params, sweep.shown)
    return valid.gate.metric or RANK_METRIC


def rank_direction(metric: str) -> Literal["maximize", "minimize"]:
    """Which way `metric` is better, as Optuna says it (nbops.ml.metrics holds the directions)."""
    from nbops.ml.metrics import higher_is_better

    return "maximize" if higher_is_better(metric) else "minimize"


class SweepError(NbopsError):
    """A sweep file is unreadable or one of its points is invalid."""


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    base: str = Field(min_length=1)
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = []
    points: list[dict[str, Any]] = []
    # `search: optuna` (nbops.sweep.search): a space of dotted keys instead of a grid and points
    search: Literal["optuna"] | None = None
    space: dict[str, Dimension] = {}
    n_trials: int | None = Field(None, ge=1)
    seed: int | None = None


@dataclass
class Point:
    index: int  # 1-based, in the order of the sweep file
    id: str  # stable across runs: a hash of the overrides (the cache folder's name)
    overrides: dict[str, Any]
    valid: Params  # the merged params (promote: false), validated once by make_points

    @cached_property
    def params(self) -> dict[str, Any]:
        return self.valid.model_dump(mode="json")

    @property
    def label(self) -> str:
        return format_overrides(self.overrides)


@dataclass
class Sweep:
    name: str
    file: Path
    shown: str
    base: Path
    base_params: dict[str, Any]
    points: list[Point]  # a search's: its trials that passed validation, filled by the search
    root: Path
    search: Search | None = None

    @property
    def build(self) -> Path:
        return sweep_build_dir(self.root, self.name)

    @property
    def reports(self) -> Path:
        return sweep_reports_dir(self.root, self.name)

    def point_build(self, point: Point) -> Path:
        return self.build / point.id

    def point_reports(self, point: Point) -> Path:
        return self.reports / point.id


@dataclass
class SweepResult:
    sweep: Sweep
    records: list[dict] = field(default_factory=list)
    best: dict | None = None
    decision: dict | None = None
    report: Path | None = None
    ran: set[str] | None = None  # a search: the trials (point ids) this sweep ran; else every point

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] != "ok" and (self.ran is None or r["id"] in self.ran)]


def say(msg: str) -> None:
    print(msg, flush=True)


def format_overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()) or "(base)"


def _set_dotted(raw: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise SweepError(f"{where}: key '{key}': not a dotted params key")
    if parts[0] in FIXED_KEYS:
        raise SweepError(f"{where}: key '{key}' cannot be swept ({FIXED_KEYS[parts[0]]})")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SweepError(f"{where}: key '{key}': '{'.'.join(parts[: depth + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def expand_overrides(spec: SweepFile, shown: str) -> list[dict[str, Any]]:
    """The grid's combinations (each grid of a list in turn), then the explicit points."""
    grids = spec.grid if isinstance(spec.grid, list) else ([spec.grid] if spec.grid else [])
    out: list[dict[str, Any]] = []
    for g, grid in enumerate(grids, 1):
        for key, values in grid.items():
            if not values:
                where = f"grid {g} " if len(grids) > 1 else "grid "
                raise SweepError(f"{shown}: {where}key '{key}': empty list of values")
        keys = list(grid)
        out += [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]
    out += [dict(p) for p in spec.points]
    if not out:
        raise SweepError(f"{shown}: no points: give a 'grid' and/or 'points'")
    return out


def _read_sweep_file(file: Path, shown: str) -> SweepFile:
    try:
        raw = read_yaml(file, shown)  # bounded: a regular file of at most 1 MB, no aliases
    except FileNotFoundError:
        raise SweepError(f"{shown}: sweep file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{shown}: cannot read sweep file ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SweepError(f"{shown}: not valid YAML{where}: {getattr(exc, 'problem', '') or exc}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{shown}: expected a mapping with 'base' and 'grid' and/or 'points'")
    try:
        return SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise SweepError([_describe_error(e, shown) for e in exc.errors()]) from None


def _describe_error(e: Any, shown: str) -> str:
    key = ".".join(map(str, e["loc"])) or "(top)"
    if e["type"] == "extra_forbidden":
        return f"{shown}: unknown key '{key}'"
    got = e.get("input")
    value = f" (got {json.dumps(got)})" if isinstance(got, str | int | float | bool) else ""
    return f"{shown}: key '{key}': {e['msg']}{value}"


def _read_base(spec: SweepFile, root: Path, shown: str) -> tuple[Path, dict[str, Any]]:
    base = Path(spec.base)
    base_file = base if base.is_absolute() else root / base
    try:
        base_raw = read_yaml(base_file, spec.base)
    except FileNotFoundError:
        raise SweepError(f"{shown}: key 'base': params file not found: {spec.base}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SweepError(f"{shown}: key 'base': {spec.base} is unreadable ({type(exc).__name__})") from None
    parse_params(base_raw, spec.base)  # a broken base names the base file, not a point
    return base_file, base_raw


def validate_overrides(base_raw: dict[str, Any], overrides: dict[str, Any], where: str) -> Params:
    """The base with `overrides` set and `promote: false`, checked by the params schema and the
    estimator: the one validation a point gets in the sweep's process."""
    from nbops.ml.models import make_estimator

    merged = copy.deepcopy(base_raw)
    for key, value in overrides.items():
        _set_dotted(merged, key, value, where)
    merged["promote"] = False
    params = parse_params(merged, where)
    make_estimator(params.model.name, params.model.params, where, params.task)
    return params


def make_points(
    base_raw: dict[str, Any], numbered: list[tuple[int, dict[str, Any]]], shown: str
) -> list[Point]:
    """Validate every (index, overrides); raise SweepError with one line per bad or repeated point."""
    problems: list[str] = []
    points: list[Point] = []
    seen: dict[str, int] = {}
    for index, overrides in numbered:
        where = f"{shown}: point {index} ({format_overrides(overrides)})"
        try:
            params = validate_overrides(base_raw, overrides, where)
        except NbopsError as exc:
            problems += exc.problems
            continue
        point_id = "p" + params_hash(overrides)[:10]
        if point_id in seen:
            problems.append(f"{where}: repeats point {seen[point_id]}")
            continue
        seen[point_id] = index
        points.append(Point(index, point_id, overrides, params))
    if problems:
        raise SweepError(problems)
    return points


def check_search(spec: SweepFile, base_raw: dict[str, Any], shown: str) -> Search:
    """A `search: optuna` section, checked whole before any kernel: one line per bad key."""
    problems = [
        f"{shown}: key '{key}': not with search: optuna (a search samples its space)"
        for key in ("grid", "points")
        if getattr(spec, key)
    ]
    problems += [
        f"{shown}: key '{key}': required with search: optuna"
        for key in ("space", "n_trials", "seed")
        if getattr(spec, key) in (None, {})
    ]
    for key, dim in spec.space.items():
        where = f"{shown}: space key '{key}'"
        if bad := dim.problems():
            problems += [f"{where}: {p}" for p in bad]
            continue
        for value in dim.corners():
            try:
                validate_overrides(base_raw, {key: value}, f"{where} value {json.dumps(value)}")
            except NbopsError as exc:
                problems += exc.problems
                break
    if not problems:  # each key is fine alone: the bounds together (an estimator may refuse a mix)
        for combo in corner_overrides(spec.space):
            try:
                validate_overrides(base_raw, combo, f"{shown}: space corner ({format_overrides(combo)})")
            except NbopsError as exc:
                problems += exc.problems[:1]
                break
    if problems:
        raise SweepError(problems)
    if spec.n_trials is None or spec.seed is None:  # reported above; for the type checker
        raise SweepError(f"{shown}: key 'n_trials': required with search: optuna")
    return Search(dict(spec.space), spec.n_trials, spec.seed)


def load_sweep(path: str | Path, root: str | Path = ".") -> Sweep:
    """Read the sweep file and validate every point (schema, hyperparameters), or a search's
    space, before any run."""
    root = Path(root).resolve()
    path = Path(path)
    file = path if path.is_absolute() else root / path
    shown = str(path)
    spec = _read_sweep_file(file, shown)
    base_file, base_raw = _read_base(spec, root, shown)
    name = spec.name or file.stem
    if spec.search is not None:
        search = check_search(spec, base_raw, shown)
        return Sweep(name, file, shown, base_file, base_raw, [], root, search)
    only = [k for k in ("space", "n_trials", "seed") if getattr(spec, k) not in (None, {})]
    if only:
        raise SweepError([f"{shown}: key '{k}': only with search: optuna" for k in only])
    points = make_points(base_raw, list(enumerate(expand_overrides(spec, shown), 1)), shown)
    return Sweep(name, file, shown, base_file, base_raw, points, root)
