"""The pure parts of the harness: statistics, the issue's targets, results.json and the table.

No timing happens here (tests/unit/test_bench.py checks these without measuring anything)."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.json")

# key -> (unit, description). Order is the table's order.
KEYS: dict[str, tuple[str, str]] = {
    "script_floor_s": ("s", "plain script, one process (the floor)"),
    "naive_s": ("s", "papermill CLI per notebook + nbconvert CLI per notebook"),
    "pipeline_cold_s": ("s", "`python -m nbops run`, empty build/ and reports/"),
    "pipeline_ratio": ("×", "pipeline_cold_s / script_floor_s"),
    "naive_over_pipeline": ("×", "naive_s / pipeline_cold_s"),
    "noop_rerun_s": ("s", "runner again, nothing changed"),
    "kernels_started_noop": ("", "kernels started by the no-op rerun"),
    "one_param_rerun_s": ("s", "after changing model.params.max_depth, kernels kept warm by the last run"),
    "one_param_over_cold": ("×", "one_param_rerun_s / pipeline_cold_s"),
    "spares_warm_after_s": ("s", "from the end of a run until the kernels it kept warm answer"),
    "one_param_immediate_s": ("s", "the same edit at once, while those kernels still import"),
    "one_param_immediate_over_cold": ("×", "one_param_immediate_s / pipeline_cold_s"),
    "one_param_fresh_kernels_s": ("s", "the same edit with NBOPS_KEEP_WARM_S=0 (no kernels kept warm)"),
    "one_param_fresh_over_cold": ("×", "one_param_fresh_kernels_s / pipeline_cold_s"),
    "dashboard_cold_tti_s": ("s", "page request → widgets, cold kernel (forked from the kernel parent)"),
    "dashboard_cold_new_process_tti_s": ("s", "the same, each kernel a new process (fork_kernels=False)"),
    "dashboard_kernel_cpu_s": ("s", "CPU of a page's forked kernel at widgets (the parent's imports: once)"),
    "dashboard_kernel_new_process_cpu_s": ("s", "CPU of a page's kernel started as a new process"),
    "dashboard_tti_s": ("s", "page request → widgets, preheated pool"),
    "predict_p95_ms": ("ms", "click Predict → label shown, p95 of 50"),
    "setup_cold_s": ("s", "`make setup`, empty venv and uv cache"),
    "pip_setup_cold_s": ("s", "same pins with pip, --no-cache-dir"),
    "validate_rss_per_mb_1e5": ("×", "read + validate 1e5 rows: peak RSS above the imports, per MB of CSV"),
    "validate_rss_per_mb_1e6": ("×", "the same for 1e6 rows (28 MB)"),
    "validate_peak_rss_mb_1e6": ("", "peak RSS (MB) of that process, imports included"),
    "refuse_big_params_s": ("s", "`nbops run` on a 48 MB params file → one line, exit 1 (1 MB cap)"),
    "refuse_big_csv_s": ("s", "`nbops run` on a 2 GB CSV → one line, exit 1 (data.max_mb)"),
    "lab_ready_s": ("s", "`nbops lab` started → its printed URL answers"),
    "lab_run_all_s": ("s", "Run All of 02_train in Lab, kernel already started"),
    "headless_train_step_s": ("s", "the same step headless (`✓ 02_train` of `nbops run --force`)"),
    "lab_over_headless": ("×", "lab_run_all_s / headless_train_step_s"),
    "image_size_mb": ("", "the Space image (`make space-image`), MB"),
    "container_cold_start_s": ("s", "`make space-run`'s container: run → Predict visible in chromium"),
    "space_serve_cold_start_s": ("s", "`make space-serve` (build/space-venv): start → Predict visible"),
    "bootstrap_1e6_classification_s": ("s", "the gate's paired bootstrap, Δ macro-F1, 1e6 held-out rows"),
    "bootstrap_1e6_regression_s": ("s", "the gate's paired bootstrap, Δ RMSE, 1e6 held-out rows"),
}


def _le(limit: float) -> Callable[[float], bool]:
    return lambda v: v <= limit


def _ge(limit: float) -> Callable[[float], bool]:
    return lambda v: v >= limit


# The speed targets the table checks: key -> (text, check).
TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "pipeline_ratio": ("≤ 1.5", _le(1.5)),
    "naive_over_pipeline": ("≥ 2", _ge(2.0)),
    "noop_rerun_s": ("≤ 0.5", _le(0.5)),
    "kernels_started_noop": ("= 0", lambda v: v == 0),
    "one_param_over_cold": ("≤ 0.6", _le(0.6)),
    "dashboard_tti_s": ("≤ 1.5", _le(1.5)),
    "predict_p95_ms": ("≤ 150", _le(150.0)),
    "setup_cold_s": ("≤ 45", _le(45.0)),
    "lab_over_headless": ("≤ 1.2", _le(1.2)),
    "bootstrap_1e6_classification_s": ("≤ 5", _le(5.0)),
    "bootstrap_1e6_regression_s": ("≤ 5", _le(5.0)),
}
SCALE_TARGET_ROWS = 1_000_000
SCALE_TARGET_S = 90.0
SCALE_TARGET_RSS_MB = 3072.0


# ------------------------------------------------------------------ statistics


def median(values: Iterable[float]) -> float:
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("median of no values")
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def percentile(values: Iterable[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def p95(values: Iterable[float]) -> float:
    return percentile(values, 95)


def summarize(samples: dict[str, list[float]]) -> dict[str, float]:
    """Median of each key's samples (keys with no samples are left out)."""
    return {k: median(v) for k, v in samples.items() if v}


# ------------------------------------------------------------------ results.json


def add_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios the targets are stated in, from the medians (only when both sides exist)."""
    out = dict(results)
    pairs = {
        "pipeline_ratio": ("pipeline_cold_s", "script_floor_s"),
        "naive_over_pipeline": ("naive_s", "pipeline_cold_s"),
        "one_param_over_cold": ("one_param_rerun_s", "pipeline_cold_s"),
        "one_param_immediate_over_cold": ("one_param_immediate_s", "pipeline_cold_s"),
        "one_param_fresh_over_cold": ("one_param_fresh_kernels_s", "pipeline_cold_s"),
        "lab_over_headless": ("lab_run_all_s", "headless_train_step_s"),
    }
    for key, (num, den) in pairs.items():
        if isinstance(out.get(num), (int, float)) and isinstance(out.get(den), (int, float)) and out[den]:
            out[key] = round(out[num] / out[den], 3)
    return out


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def build_results(
    medians: dict[str, Any],
    samples: dict[str, list],
    *,
    rounds: int,
    machine: dict[str, Any],
    notes: list[str] | None = None,
    scale: list[dict] | None = None,
    sweep: dict | None = None,
    started: str = "",
    seconds: float | None = None,
) -> dict[str, Any]:
    """results.json: the figures at top level (issue's keys), then how they were obtained."""
    results: dict[str, Any] = {k: _round(v) for k, v in add_ratios(medians).items()}
    if scale is not None:
        results["scale"] = scale
    if sweep is not None:
        results["sweep"] = sweep
    results["meta"] = {
        "rounds": rounds,
        "statistic": "median of the rounds; rounds interleave the variants",
        "machine": machine,
        "started": started,
        "bench_seconds": None if seconds is None else round(seconds, 1),
        "notes": notes or [],
        "samples": {k: [_round(x) for x in v] for k, v in samples.items()},
    }
    return results


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def write_results(results: dict[str, Any], path: Path = RESULTS) -> Path:
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ docs/benchmarks.md

README_START = "<!-- bench:start (written by make bench) -->"
README_END = "<!-- bench:end -->"


def replace_block(text: str, block: str) -> str:
    """`text` with the part between the bench markers replaced by `block` (appended if absent)."""
    body = f"{README_START}\n{block.strip()}\n{README_END}"
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        return head + body + tail
    return text.rstrip("\n") + "\n\n" + body + "\n"


# ------------------------------------------------------------------ the table


def _fmt(value, unit: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:g}"


def verdict(key: str, value) -> str:
    if key not in TARGETS or not isinstance(value, (int, float)):
        return ""
    text, check = TARGETS[key]
    return f"{text} {'✓' if check(value) else '✗'}"


SWEEP_EXECUTORS = ("local", "local (warm off)", "dask", "dask (warm off)")


def sweep_table(sweep: dict[str, Any]) -> list[str]:
    """benchmarks/bench_sweep.py's figures: one row per executor, warm or not, and worker count,
    with the load average when it ran and the median point's split."""
    head = f"sweep of {sweep.get('points', '?')} points (benchmarks/bench_sweep.py)"
    if "one_by_one_s" in sweep:
        head += f"; one pipeline run per point: {sweep['one_by_one_s']:.1f} s"
        if "one_by_one_load_1m" in sweep:
            head += f" (load {sweep['one_by_one_load_1m']:.1f})"
    rows = []
    for executor in SWEEP_EXECUTORS:
        for workers, fig in (sweep.get(executor) or {}).items():
            if isinstance(fig, dict) and "seconds" in fig:
                speedup = fig.get("speedup_vs_one_by_one")
                split = fig.get("split") or {}
                parts = [
                    split.get(k)
                    for k in ("point_s", "kernel_wait_s", "cells_s", "mlflow_logging_s", "runner_s")
                ]
                rows.append(
                    f"| {executor} | {workers} | {fig['seconds']:.1f} | {fig.get('points_per_min', 0):.1f} | "
                    + (f"{speedup:.2f}× |" if isinstance(speedup, (int, float)) else "– |")
                    + (f" {fig['load_1m']:.1f} |" if isinstance(fig.get("load_1m"), (int, float)) else " – |")
                    + "".join(f" {v:.2f} |" if isinstance(v, (int, float)) else " – |" for v in parts)
                )
    if not rows:
        return [head + ":", "", "```", json.dumps(sweep), "```"]
    header = [
        "| executor | workers | seconds | points/min | × one by one | load | point s | kernel wait | cells "
        "| MLflow logging | runner |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    return [head + ":", "", *header, *rows]


def format_table(results: dict[str, Any]) -> str:
    """Markdown: figure, value, target with ✓/✗, what it is; then the scale table."""
    lines = ["| figure | value | target | what |", "|---|---|---|---|"]
    for key, (unit, what) in KEYS.items():
        if key not in results:
            continue
        lines.append(f"| `{key}` | {_fmt(results[key], unit)} | {verdict(key, results[key])} | {what} |")
    scale = results.get("scale")
    if scale:
        lines += ["", "| rows | seconds | peak RSS (MB) | target |", "|---|---|---|---|"]
        for row in scale:
            mark = ""
            if row["rows"] == SCALE_TARGET_ROWS:
                ok = row["seconds"] <= SCALE_TARGET_S and row["peak_rss_mb"] <= SCALE_TARGET_RSS_MB
                mark = f"≤ {SCALE_TARGET_S:.0f} s, ≤ 3 GB {'✓' if ok else '✗'}"
            lines.append(f"| {row['rows']:,} | {row['seconds']:.2f} | {row['peak_rss_mb']:.0f} | {mark} |")
        if len(scale) >= 2 and scale[-1]["rows"] > scale[-2]["rows"]:
            a, b = scale[-2], scale[-1]
            growth = (b["seconds"] / a["seconds"]) / (b["rows"] / a["rows"]) if a["seconds"] else None
            if growth is not None:
                lines.append(
                    f"\n{a['rows']:,} → {b['rows']:,} rows: time ×{b['seconds'] / a['seconds']:.1f} "
                    f"for rows ×{b['rows'] / a['rows']:.0f} (1.0 would be linear: {growth:.2f})"
                )
    if "sweep" in results:
        lines += ["", *sweep_table(results["sweep"])]
    meta = results.get("meta", {})
    m = meta.get("machine", {})
    if m:
        lines += [
            "",
            f"Machine: {m.get('nproc')} cores, {m.get('cpu')}, {m.get('ram_gb')} GB RAM, "
            f"Python {m.get('python')}. Median of {meta.get('rounds')} interleaved rounds.",
        ]
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines)
