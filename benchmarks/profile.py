"""`make bench-profile`: where the time goes, for the lead engineer.

- pyinstrument on `python -m nbops run` (cold, then noop) in a temp project: HTML and text under
  benchmarks/profiles/ (git-ignored). pyinstrument samples the main thread only: notebook steps
  run in worker threads and show as waiting; what a kernel does is measured separately below.
- `python -X importtime` of the noop run: the runner's own imports, heaviest first.
- Inside a kernel: a scratch notebook run with papermill times kernel start-up (process start to
  first cell) and each heavy import the notebooks make, in the order they make them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.project import PY, checked, clean_env, init_project, make_project, measure, package_hash

OUT = Path(__file__).with_name("profiles")
KERNEL_IMPORTS = [
    ("numpy", "import numpy"),
    ("pandas", "import pandas"),
    ("pyarrow (read_parquet)", "import pyarrow.parquet"),
    ("matplotlib + inline backend", "import matplotlib.pyplot as plt\nget_ipython().run_line_magic('matplotlib', 'inline')"),  # noqa: E501
    ("seaborn", "import seaborn"),
    ("sklearn (pipeline, tree, metrics, model_selection)",
     "import sklearn.pipeline, sklearn.tree, sklearn.metrics, sklearn.model_selection, sklearn.compose"),
    ("nbops.ml.plots, nbops.ml.data, nbops.ml.models", "from nbops import plots, data, models"),
    ("pandera", "import pandera.pandas"),
    ("mlflow", "import mlflow"),
    ("mlflow.sklearn + skops", "import mlflow.sklearn, skops.io"),
    ("nbops.ml.tracking, nbops.ml.evaluation, nbops.ml.gate", "from nbops import tracking, evaluation, gate"),
]  # fmt: skip


def _pyinstrument(root: Path, name: str, params: str = "params/default.yaml") -> float:
    session = OUT / f"{name}.pyisession"
    cmd = [
        PY,
        "-m",
        "pyinstrument",
        "-r",
        "pyisession",
        "-o",
        str(session),
        "-m",
        "nbops",
        "run",
        "--params",
        params,
    ]
    m = checked(measure(cmd, root), f"pyinstrument {name}")
    for renderer, ext in (("html", "html"), ("text", "txt")):
        subprocess.run(
            [PY, "-m", "pyinstrument", "--load", str(session), "-r", renderer,
             "-o", str(OUT / f"runner-{name}.{ext}")],
            check=True,
        )  # fmt: skip
    return m.seconds


def _importtime(root: Path) -> list[tuple[float, str]]:
    """Cumulative import time of the top-level packages imported by a noop run."""
    done = subprocess.run(
        [PY, "-X", "importtime", "-m", "nbops", "run"],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    tops: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # top level only
            tops[m.group(3)] = tops.get(m.group(3), 0) + int(m.group(1)) / 1e6
    return sorted(((s, n) for n, s in tops.items()), reverse=True)


def _kernel_notebook(path: Path) -> None:
    cells = [
        "import os, time, psutil\n"
        "_first_cell = time.time()\n"
        "print(json_line := f'startup {_first_cell - psutil.Process(os.getpid()).create_time():.3f}')"
    ]
    for label, code in KERNEL_IMPORTS:
        cells.append(
            f"_t = time.perf_counter()\n{code}\n"
            f"print('import', {label!r}, f'{{time.perf_counter() - _t:.3f}}')"
        )
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {},
                "source": s,
                "outputs": [],
                "execution_count": None,
            }
            for i, s in enumerate(cells)
        ],
    }
    path.write_text(json.dumps(nb))


def _kernel_imports(root: Path) -> tuple[float, list[tuple[str, float]], float]:
    """(papermill CLI wall time, [(what, seconds)], kernel start-up to first cell)."""
    nb = root / "kernel_imports.ipynb"
    _kernel_notebook(nb)
    t = time.perf_counter()
    out = root / "kernel_imports.out.ipynb"
    subprocess.run(
        [str(Path(PY).parent / "papermill"), str(nb), str(out), "--no-progress-bar", "-k", "python3"],
        cwd=root, env=clean_env(), check=True, capture_output=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    rows, startup = [], float("nan")
    for cell in json.loads(out.read_text())["cells"]:
        for o in cell.get("outputs", []):
            for line in "".join(o.get("text", "")).splitlines():
                if line.startswith("startup "):
                    startup = float(line.split()[1])
                elif line.startswith("import "):
                    label, secs = line[len("import ") :].rsplit(" ", 1)
                    rows.append((label, float(secs)))
    return wall, rows, startup


def main() -> int:
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nbops-profile-"))
    try:
        return _profile(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _profile(work: Path) -> int:
    root = make_project(work / "project")
    init_project(root)
    lines = ["# Profiles of the runner (benchmarks/profile.py)", ""]
    before = package_hash()
    cold = _pyinstrument(root, "cold")
    noop = _pyinstrument(root, "noop")
    lines += [f"cold run {cold:.2f} s, noop run {noop:.2f} s (under pyinstrument)", ""]
    if package_hash() != before:
        lines += ["WARNING: src/nbops changed during profiling: the noop run reran steps.", ""]
    lines += ["## Runner imports on a noop run (python -X importtime, top-level, cumulative)", ""]
    lines += [f"- {n}: {s:.3f} s" for s, n in _importtime(root)[:15]]
    wall, rows, startup = _kernel_imports(root)
    lines += ["", f"## Inside a kernel (papermill CLI, {wall:.2f} s wall for the scratch notebook)", ""]
    lines += [f"- kernel process start → first cell: {startup:.3f} s"]
    lines += [f"- {label}: {secs:.3f} s" for label, secs in rows]
    text = "\n".join(lines) + "\n"
    (OUT / "summary.md").write_text(text)
    print(text)
    print(f"profiles: {OUT}/runner-cold.html, runner-noop.html, *.txt, summary.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
