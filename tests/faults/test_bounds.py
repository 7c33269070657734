"""Bounded by design: each input that exhausted a 24 GB machine or hung gets one clear
line and exit 1 with nothing registered, or finishes within a stated memory and time.

Every hostile input runs in a child process that bounds itself: its address space capped with
RLIMIT_AS (inherited by the kernels it starts), a wall-clock timeout after which its whole process
group is killed. A regression fails the test; it cannot take the machine with it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks.bench_bounds import sparse_file
from nbops.layout import build_dir, build_root, reports_dir
from tests.conftest import REPO, make_project, write_params

# Fewer threads, fewer malloc arenas: address space a child reserves without using it
LEAN_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "MPLBACKEND": "agg"}


def run_bounded(args: list[str], cwd: Path, *, mem_mb: int, timeout: float, env: dict | None = None):
    """Run `args` with RLIMIT_AS = mem_mb (for it and every process it starts) and kill its
    process group after `timeout` seconds (then the test fails). Returns CompletedProcess with
    the seconds it took as `.seconds`."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))

    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(LEAN_ENV, **(env or {}))
    start = time.monotonic()
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(args[:4])} … still running after {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # kernels it left (they are in its group)
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    done.seconds = time.monotonic() - start
    return done


def nbops_bounded(root: Path, *args: str, mem_mb: int = 4096, timeout: float = 300, env=None):
    """`python -m nbops ...` in `root`, bounded as run_bounded."""
    return run_bounded([sys.executable, "-m", "nbops", *args], root, mem_mb=mem_mb, timeout=timeout, env=env)


def python_bounded(code: str, cwd: Path = REPO, *, mem_mb: int, timeout: float):
    return run_bounded([sys.executable, "-c", textwrap.dedent(code)], cwd, mem_mb=mem_mb, timeout=timeout)


def nothing_registered(root: Path) -> bool:
    """No registered model version in the project's store (or no store at all)."""
    db = root / "mlflow" / "mlflow.db"
    if not db.exists():
        return True
    import sqlite3

    with sqlite3.connect(db) as con:
        try:
            return con.execute("select count(*) from model_versions").fetchone()[0] == 0
        except sqlite3.OperationalError:  # the store was never initialised
            return True


# ------------------------------------------------------------------ in-process pieces, bounded


def test_confusion_heatmap_of_600_classes_renders_within_memory_and_time():
    """Was ~33,000 × 27,000 px with an annotation per cell (the evaluate kernel OOM-killed at
    24 GB); the bound is the child's whole address space."""
    res = python_bounded(
        """
        import io, time
        import numpy as np
        from nbops.ml import plots
        rng = np.random.default_rng(0)
        n = 600
        matrix = np.zeros((n, n), dtype=int)
        for i in range(n):
            for _ in range(4):
                matrix[i, i if rng.random() < 0.5 else rng.integers(n)] += 1
        t = time.perf_counter()
        labels = [f"drug{i}" for i in range(n)]
        fig = plots.confusion_heatmap(matrix.tolist(), labels, "challenger v1", "Drug")
        png = io.BytesIO()
        fig.savefig(png, format="png", bbox_inches="tight")
        print(f"{time.perf_counter() - t:.1f}", len(png.getvalue()))
        """,
        mem_mb=1536,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    seconds, size = res.stdout.split()
    assert float(seconds) < 30 and int(size) < 2_000_000


def test_a_long_column_list_validates_in_linear_time():
    """A 48 MB `data.numeric` now stops at the 1 MB cap; under it, 100k names (0.8 MB) took
    minutes with a list lookup per name, and take under a second with a set."""
    res = python_bounded(
        """
        import tempfile, time
        from pathlib import Path
        from nbops.exceptions import ParamsError
        from nbops.params import load_params
        text = Path("params/smoke.yaml").read_text()
        names = ", ".join(f"c{i}" for i in range(100_000))
        text = text.replace("numeric: [Age, Na_to_K]", f"numeric: [{names}, c99999]")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fh:
            fh.write(text)
            fh.flush()
            t = time.perf_counter()
            try:
                load_params(fh.name, "params/long.yaml")
            except ParamsError as exc:
                print(f"{time.perf_counter() - t:.2f}")
                print("\\n".join(exc.problems))
        """,
        mem_mb=1536,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    seconds, *lines = res.stdout.splitlines()
    assert float(seconds) < 5
    assert "params/long.yaml: key 'data.numeric': column 'c99999' is listed twice" in lines


def _generate(path: Path, rows: int) -> Path:
    from nbops.ml.synthetic import write_synthetic_table

    return write_synthetic_table(path, rows, 42, 0.0)


def test_reading_and_validating_a_csv_costs_a_few_times_its_size(tmp_path):
    """1e6 rows (28 MB): peak RSS over the process's own (imports) was ~11× the file, ≈4.6×
    now (text columns read as categories, labels normalised on their distinct values)."""
    csv = _generate(tmp_path / "t.csv", 1_000_000)
    res = python_bounded(
        f"""
        import re
        from pathlib import Path
        import pandas, pandera.pandas, sklearn.model_selection
        from nbops.params import load_params
        from nbops.ml.data import read_table, validate_table, check_splittable
        def hwm():  # not ru_maxrss: Linux carries that over from the parent (pytest) across exec
            return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
        params = load_params("params/default.yaml")
        base = hwm()
        path = Path({str(csv)!r})
        df = validate_table(read_table(path, params.data, "t.csv"), params.data, "t.csv")
        check_splittable(df, params.data, 0.2, "t.csv")
        peak = hwm()
        print((peak - base) / 1024 / (path.stat().st_size / 2**20), len(df))
        """,
        mem_mb=3072,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    per_mb, rows = res.stdout.split()
    assert int(rows) == 1_000_000
    assert float(per_mb) < 7, f"{float(per_mb):.1f} MB of RSS per MB of CSV"


# ------------------------------------------------------------------ through the CLI


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path / "project")


HEADER = b"Age,Sex,BP,Cholesterol,Na_to_K,Drug\n23,F,HIGH,HIGH,25.355,drugY\n"


def _use_data(root: Path, name: str, csv: str, **data) -> str:
    def edit(p):
        p["data"]["path"] = csv
        del p["data"]["synthetic"]
        p["data"].update(data)

    write_params(root, name, edit)
    return f"params/{name}.yaml"


@pytest.mark.e2e
def test_a_2_gb_csv_is_refused_by_data_max_mb_before_it_is_read(project):
    sparse_file(project / "data" / "raw" / "big.csv", 2 << 30, HEADER)
    params = _use_data(project, "big", "data/raw/big.csv")
    res = nbops_bounded(project, "run", "--params", params, mem_mb=1536, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.splitlines() == [
        "error: params/big.yaml: key 'data.path': data/raw/big.csv is 2,048 MB, more than data.max_mb=1024 "
        "(raise it to read this file)"
    ]
    assert res.seconds < 20
    assert not build_root(project).exists() and nothing_registered(project)


@pytest.mark.e2e
@pytest.mark.parametrize("head", [HEADER, b""], ids=["nuls-after-a-header", "all-nuls"])
def test_a_2_gb_file_of_nuls_under_a_raised_cap_is_refused_from_its_first_mb(project, head):
    """With data.max_mb raised past it, the file is refused from its first MB, before it is
    hashed or read (read whole, it was OOM-killed at 23.7 GB with no message)."""
    sparse_file(project / "data" / "raw" / "nul.csv", 2 << 30, head)
    params = _use_data(project, "nul", "data/raw/nul.csv", max_mb=4096)
    res = nbops_bounded(project, "run", "--params", params, mem_mb=2048, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.splitlines() == ["error: data/raw/nul.csv: not a text CSV file (binary content)"]
    assert "started" not in res.stdout and nothing_registered(project)


@pytest.mark.e2e
def test_a_run_over_run_timeout_s_stops_its_kernels_and_leaves_a_failed_run_report(project):
    """`n_estimators: 100000` trained for as long as the cell timeout allowed (600 s), with no
    bound on the run. Now: a warning line before the run, and the run ends at run.timeout_s."""

    def edit(p):
        p["model"] = {"name": "random_forest", "params": {"n_estimators": 100_000, "random_state": 0}}
        p["run"] = {"timeout_s": 20}

    write_params(project, "huge", edit)
    # train alone (and the validation it needs): the budget is spent in its fit, not in EDA
    res = nbops_bounded(project, "run", "--params", "params/huge.yaml", "--only", "02_train", timeout=240)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert (
        "warning: params/huge.yaml: key 'model.params.n_estimators': 100000 is more than 5000, training "
        "may take very long; the run stops at run.timeout_s=20"
    ) in res.stderr.splitlines()
    (error,) = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    # the cell running when the budget ran out (none yet, on a machine too loaded to start the kernel)
    pattern = r"error: failed at 02_train(, cell \d+)?: RunTimeoutError: run exceeded run.timeout_s=20"
    assert re.fullmatch(pattern, error), error
    assert "! run exceeded run.timeout_s=20: stopping kernels" in res.stdout
    assert res.seconds < 20 + 60, f"took {res.seconds:.0f} s"
    index = (reports_dir(project, "huge") / "index.html").read_text()
    assert "02_train" in index
    if ", cell " in error:  # the notebook ran up to that cell: its report shows how far
        assert (reports_dir(project, "huge") / "02_train.html").is_file()
    assert nothing_registered(project)
    assert not (build_dir(project, "huge") / "02_train" / ".stamp.json").exists()


@pytest.mark.e2e
def test_600_classes_of_4_rows_run_through_within_memory(project):
    """A 40 KB table: the evaluate kernel was OOM-killed at 24 GB drawing the heatmap. Every
    process of the run (the kernels too) is capped at 4 GB of address space here."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = 600 * 4
    labels = np.repeat([f"drug{i:03d}" for i in range(600)], 4)
    df = pd.DataFrame(
        {
            "Age": rng.integers(15, 75, rows),
            "Sex": rng.choice(["F", "M"], rows),
            "BP": rng.choice(["HIGH", "LOW", "NORMAL"], rows),
            "Cholesterol": rng.choice(["HIGH", "NORMAL"], rows),
            "Na_to_K": rng.uniform(6, 38, rows).round(3),
            "Drug": labels,
        }
    )
    df.to_csv(project / "data" / "raw" / "many.csv", index=False)

    def edit(p):
        p["data"]["path"] = "data/raw/many.csv"
        del p["data"]["synthetic"]
        del p["data"]["classes"]
        p["split"]["test_size"] = 0.5  # a holdout with room for every class
        p["model"]["cv_folds"] = 2
        p["gate"].update(min_macro_f1=0.0, min_accuracy=0.0)

    write_params(project, "many", edit)
    res = nbops_bounded(project, "run", "--params", "params/many.yaml", mem_mb=4096, timeout=420)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.seconds < 300, f"took {res.seconds:.0f} s"
    metrics = json.loads((build_dir(project, "many") / "03_evaluate" / "metrics.json").read_text())
    assert len(metrics["challenger"]["metrics"]["labels"]) == 600


@pytest.mark.e2e
def test_the_no_op_fast_path_never_reads_a_fifo_or_a_device(smoke_project):
    """The rerun fast path hashed the params file before loading it: `--params /dev/zero` or a
    FIFO at the params file's path read forever."""
    project = smoke_project  # after the smoke pipeline's run: the rerun below arms the fast path
    res = nbops_bounded(project, "run", "--params", "params/smoke.yaml", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (build_dir(project, "smoke") / ".last-run.json").is_file()  # the fast path is armed
    smoke = project / "params" / "smoke.yaml"
    smoke.rename(project / "params" / "smoke.yaml.bak")
    os.mkfifo(smoke)
    res = nbops_bounded(project, "run", "--params", "params/smoke.yaml", mem_mb=2048, timeout=60)
    assert (res.returncode, res.stderr.splitlines()) == (
        1,
        ["error: params/smoke.yaml: not a regular file (a FIFO)"],
    )
    smoke.unlink()
    smoke.symlink_to("/dev/zero")
    res = nbops_bounded(project, "run", "--params", "params/smoke.yaml", mem_mb=2048, timeout=60)
    assert res.stderr.splitlines() == ["error: params/smoke.yaml: not a regular file (a character device)"]
    assert res.seconds < 20
