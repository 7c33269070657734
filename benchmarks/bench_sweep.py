"""Sweep throughput: points per minute for a 16-point sweep with 1, 2 and 4 workers on the local
pool and on a Dask LocalCluster (separate worker processes, 127.0.0.1), each with warm kernels
(the default) and with them off (`NBOPS_SWEEP_WARM=0`), against the same points run one by one
as `make pipeline` does (`python -m nbops run`, one process per point).

Each configuration runs in a fresh temp project with its own store (no cache hits); warm on and
off run back to back for each executor and worker count, so the machine's load (other sessions
on the same 2 cores) weighs on both alike: the 1-minute load average is kept with each figure.
Each figure also carries the median per-point split (kernel wait, cells, MLflow logging, the
runner), from the points' records. `python -m benchmarks.bench_sweep [--points N] [--workers 1 2 4]`
prints JSON; `measure_sweep()` returns the same dict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPLIT_KEYS = ("kernel_wait_s", "cells_s", "mlflow_logging_s", "runner_s")
WARM_OFF = " (warm off)"


def _project(base: Path, points: int) -> Path:
    root = base / "project"
    for folder in ("notebooks", "params"):
        shutil.copytree(REPO / folder, root / folder)
    (root / "data" / "raw").mkdir(parents=True)
    depths = list(range(2, 2 + points))
    body = {"name": "bench", "base": "params/smoke.yaml", "grid": {"model.params.max_depth": depths}}
    (root / "params" / "sweeps" / "bench.yaml").write_text(yaml.safe_dump(body))
    return root


def _env(warm: bool = True) -> dict:
    # no kernels kept warm between the one-by-one runs: back to back, a run would adopt kernels
    # still importing (no gain, see one_param_immediate_s), and sweeps never keep any
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "NBOPS_KEEP_WARM_S": "0", "NBOPS_SWEEP_WARM": "1" if warm else "0"}


def _timed(cmd: list[str], cwd: Path, warm: bool = True) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=_env(warm), check=True, capture_output=True, text=True, timeout=7200)
    return time.perf_counter() - t


def _split(root: Path) -> dict[str, float]:
    """The median per-point seconds and split over the sweep's points."""
    records = [json.loads(p.read_text()) for p in (root / "build" / "sweeps" / "bench").glob("*/point.json")]
    splits = [r["split"] for r in records if r.get("split")]
    out = {"point_s": round(statistics.median(r["seconds"] for r in records if r.get("seconds")), 2)}
    for key in SPLIT_KEYS:
        if splits:
            out[key] = round(statistics.median(s[key] for s in splits), 2)
    return out


def _sweep(points: int, workers: int, dask: bool, warm: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="nbops-bench-sweep-") as tmp:
        root = _project(Path(tmp), points)
        cmd = [sys.executable, "-m", "nbops", "sweep", "--sweep", "params/sweeps/bench.yaml", "--no-promote"]
        if not dask:
            seconds = _timed([*cmd, "--workers", str(workers)], root, warm)
        else:
            from distributed import LocalCluster

            with LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster:  # the sweep's process decides warm or not, in each point's spec
                seconds = _timed([*cmd, "--scheduler", cluster.scheduler_address], root, warm)
        return {"seconds": seconds, "split": _split(root)}


def _one_by_one(points: int) -> float:
    """The same points as separate `make pipeline` runs (train + evaluate each)."""
    with tempfile.TemporaryDirectory(prefix="nbops-bench-seq-") as tmp:
        root = _project(Path(tmp), points)
        from nbops.sweep.spec import load_sweep

        sweep = load_sweep("params/sweeps/bench.yaml", root)
        total = 0.0
        for p in sweep.points:
            params = root / "params" / f"point-{p.id}.yaml"
            params.write_text(yaml.safe_dump(p.params))
            shown = str(params.relative_to(root))
            # like for like with a sweep point: train + evaluate (what `make evaluate` runs)
            cmd = [sys.executable, "-m", "nbops", "run", "--params", shown, "--only", "03_evaluate"]
            total += _timed(cmd, root)
        return total


def measure_sweep(points: int = 16, workers: tuple[int, ...] = (1, 2, 4)) -> dict:
    """{"points", "cores", "one_by_one_s", "one_by_one_points_per_min", "one_by_one_load_1m",
    "local": {n: {"seconds", "points_per_min", "speedup_vs_one_by_one", "load_1m", "split"}},
    "local (warm off)": {same}, "dask": {same}, "dask (warm off)": {same}}"""
    seq = _one_by_one(points)
    out: dict = {
        "points": points,
        "cores": os.cpu_count(),
        "one_by_one_s": round(seq, 1),
        "one_by_one_points_per_min": round(points / seq * 60, 2),
        "one_by_one_load_1m": round(os.getloadavg()[0], 1),
    }
    for kind in ("local", "dask"):
        for n in workers:
            for warm in (True, False):
                run = _sweep(points, n, dask=kind == "dask", warm=warm)
                s = run["seconds"]
                out.setdefault(kind if warm else kind + WARM_OFF, {})[n] = {
                    "seconds": round(s, 1),
                    "points_per_min": round(points / s * 60, 2),
                    "speedup_vs_one_by_one": round(seq / s, 2),
                    "load_1m": round(os.getloadavg()[0], 1),
                    "split": run["split"],
                }
                print(
                    f"{kind}{'' if warm else WARM_OFF} x{n}: {points / s * 60:.1f} points/min",
                    file=sys.stderr,
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args(argv)
    print(json.dumps(measure_sweep(args.points, tuple(args.workers)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
