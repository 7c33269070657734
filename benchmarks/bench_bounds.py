"""Bounds: memory per MB of CSV read and validated, and how long refusing an oversized
params file and an oversized CSV takes.

    python -m benchmarks.run --only bounds

Memory: `read_table` + `validate_table` + `check_splittable` on the synthetic table in a fresh
process; the figure is the peak RSS above what the process held after its imports, per MB of
CSV (the process's own ~200 MB would otherwise dominate small files). Refusals: the CLI
(`python -m nbops run`) on a 48 MB params file and on a 2 GB CSV (sparse files: no disk), from
process start to exit 1."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from benchmarks.project import PY, REPO, clean_env, make_project, write_params

ROWS = (100_000, 1_000_000)

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across exec
_MEASURE = """
import re, sys, time
from pathlib import Path
import pandas, pandera.pandas, sklearn.model_selection  # imported before the baseline
from nbops.params import load_params
from nbops.ml.data import check_splittable, read_table, validate_table
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024
params = load_params(sys.argv[2])
base = hwm()
path = Path(sys.argv[1])
t = time.perf_counter()
df = validate_table(read_table(path, params.data, path.name), params.data, path.name)
check_splittable(df, params.data, params.split.test_size, path.name)
seconds = time.perf_counter() - t
peak = hwm()
mb = path.stat().st_size / 2**20
print((peak - base) / mb, peak, seconds, mb)
"""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rss_per_mb(csv: Path, params: Path) -> tuple[float, float, float, float]:
    """(MB of RSS above the imports per MB of CSV, peak RSS MB, seconds, CSV MB)."""
    out = subprocess.run(
        [PY, "-c", _MEASURE, str(csv), str(params)], cwd=REPO, env=clean_env(), capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(f"measuring {csv} failed:\n{out.stderr[-3000:]}")
    per_mb, peak, seconds, mb = (float(x) for x in out.stdout.split())
    return per_mb, peak, seconds, mb


def time_refusal(root: Path, params: str, expected: str) -> float:
    t = time.perf_counter()
    cmd = [PY, "-m", "nbops", "run", "--params", params]
    out = subprocess.run(cmd, cwd=root, env=clean_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if out.returncode != 1 or expected not in out.stderr:
        raise RuntimeError(f"{params} was not refused as expected ({expected!r}):\n{out.stderr[-2000:]}")
    return seconds


def sparse_file(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes: `head`, then NULs that cost no disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def bench_bounds(rounds: int, work: Path, samples: dict[str, list]) -> None:
    from nbops.ml.synthetic import write_synthetic_table

    root = make_project(work / "bounds")
    tables = {n: write_synthetic_table(root / "data" / "raw" / f"bounds-{n}.csv", n, 42, 0.0) for n in ROWS}
    sparse_file(root / "params" / "big.yaml", 48 << 20, b"data:\n  numeric: [")
    head = b"Age,Sex,BP,Cholesterol,Na_to_K,Drug\n23,F,HIGH,HIGH,25.355,drugY\n"
    sparse_file(root / "data" / "raw" / "big.csv", 2 << 30, head)

    def edit(p):
        p["data"]["path"] = "data/raw/big.csv"
        del p["data"]["synthetic"]

    big_csv = write_params(root, "big-csv", edit)
    for r in range(rounds):
        for rows, csv in tables.items():
            per_mb, peak, seconds, mb = rss_per_mb(csv, root / "params" / "default.yaml")
            key = f"{rows:.0e}".replace("+0", "")  # 1e5, 1e6
            samples[f"validate_rss_per_mb_{key}"].append(per_mb)
            samples[f"validate_peak_rss_mb_{key}"].append(peak)
            say(f"  bounds round {r + 1}/{rounds}: {rows:,} rows ({mb:.1f} MB): {per_mb:.1f} MB per MB, "
                f"peak {peak:.0f} MB, {seconds:.2f} s")  # fmt: skip
        samples["refuse_big_params_s"].append(
            time_refusal(root, "params/big.yaml", "more than the 1 MB a params file may have")
        )
        samples["refuse_big_csv_s"].append(time_refusal(root, big_csv, "more than data.max_mb=1024"))
        params_s, csv_s = samples["refuse_big_params_s"][-1], samples["refuse_big_csv_s"][-1]
        say(
            f"  bounds round {r + 1}/{rounds}: refused a 48 MB params file in {params_s:.2f} s, "
            f"a 2 GB CSV in {csv_s:.2f} s"
        )


BOUNDS_KEYS = (
    "validate_rss_per_mb_1e5",
    "validate_rss_per_mb_1e6",
    "validate_peak_rss_mb_1e5",
    "validate_peak_rss_mb_1e6",
    "refuse_big_params_s",
    "refuse_big_csv_s",
)
