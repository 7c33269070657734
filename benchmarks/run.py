"""`make bench`: every benchmark figure, medians of interleaved rounds, into results.json.

    python -m benchmarks.run              # everything (BENCH_ROUNDS=N to change the rounds)
    BENCH_QUICK=1 python -m benchmarks.run  # 3 rounds, scale up to 1e5 rows, for iterating
    python -m benchmarks.run --only pipeline scale  # parts: pipeline scale dashboard setup sweep bounds image

Each round builds fresh temp projects (notebooks/ and params/ copied from the repo, data
generated and MLflow store initialised before the clock starts) and runs the variants in a
rotated order, so machine noise hits every variant alike."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.project import (
    PY,
    REPO,
    checked,
    clean_env,
    init_project,
    init_projects,
    make_project,
    measure,
    package_hash,
    write_params,
)
from nbops.layout import build_dir, build_root, params_name

PARAMS = "params/default.yaml"
STEPS = ("01_eda", "02_train", "03_evaluate")
PARTS = ("pipeline", "scale", "dashboard", "setup", "sweep", "bounds", "image", "lab", "bootstrap")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the three ways


_NAIVE_PREP = """
import json, sys
from pathlib import Path
from nbops.runner.plan import make_plan
from nbops.runner.pipeline import run_validate
root = Path(sys.argv[1])
plan = make_plan(root / sys.argv[2], root)
print(json.dumps(plan.injected))
"""
_NAIVE_VALIDATE = """
import sys
from pathlib import Path
from nbops.runner.plan import make_plan
from nbops.runner.pipeline import run_validate
root = Path(sys.argv[1])
run_validate(make_plan(root / sys.argv[2], root))
"""


def prepare_naive(root: Path) -> list[list[str]]:
    """The usual way's commands, with the parameters the runner would inject (written as YAML)."""
    import yaml

    out = subprocess.run(
        [PY, "-c", _NAIVE_PREP, str(root), PARAMS], cwd=root, env=clean_env(), capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr)
    injected = json.loads(out.stdout.strip().splitlines()[-1])
    bindir = Path(PY).parent
    cmds = [[PY, "-c", _NAIVE_VALIDATE, str(root), PARAMS]]  # a script validates, as a user's would
    for step in STEPS:
        (root / "naive" / step).mkdir(parents=True)
        (build_dir(root, params_name(PARAMS)) / step).mkdir(parents=True, exist_ok=True)
        pfile = root / "naive" / f"{step}.yaml"
        pfile.write_text(yaml.safe_dump(injected[step]))
        cmds.append(
            [str(bindir / "papermill"), f"notebooks/{step}.ipynb", f"naive/{step}/{step}.ipynb",
             "-f", str(pfile), "--cwd", "notebooks", "-k", "python3", "--no-progress-bar"]
        )  # fmt: skip
    for step in STEPS:
        cmds.append(
            [str(bindir / "jupyter"), "nbconvert", "--to", "html", f"naive/{step}/{step}.ipynb",
             "--output-dir", "naive/html"]
        )  # fmt: skip
    return cmds


def run_naive(root: Path, cmds: list[list[str]]) -> tuple[float, float, int]:
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    total, peak, kernels = 0.0, 0.0, 0
    for cmd in cmds:
        m = checked(measure(cmd, root, env), "naive: " + " ".join(cmd[:3]))
        total += m.seconds
        peak = max(peak, m.peak_rss_mb)
        kernels += m.kernels
    return total, peak, kernels


# Kernels kept warm between runs (nbops.runner.spares) are the default on a developer's machine; set
# here explicitly so that CI=true in the bench's environment does not turn them off.
KEEP_WARM = {"NBOPS_KEEP_WARM_S": "120"}
NO_SPARES = {"NBOPS_KEEP_WARM_S": "0"}
ADOPTED = "(kernel kept warm by the last run)"


def wait_for_spares(root: Path, count: int, timeout_s: float = 120) -> float:
    """Seconds until `count` kernels kept warm in root/build/.spares answer (their warm-up is done)."""
    from jupyter_client import BlockingKernelClient

    t0 = time.perf_counter()
    folder = build_root(root) / ".spares"
    while len(records := sorted(folder.glob("*.spare"))) < count:
        if time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"{len(records)} of {count} kept kernels in {folder}")
        time.sleep(0.02)
    for record in records:
        client = BlockingKernelClient(connection_file=json.loads(record.read_text())["connection_file"])
        client.load_connection_file()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=timeout_s)  # answered only once the warm-up has run
        finally:
            client.stop_channels()
    return time.perf_counter() - t0


def run_pipeline(root: Path, params: str = PARAMS, env: dict[str, str] | None = None):
    cmd = [PY, "-m", "nbops", "run", "--params", params]
    return checked(measure(cmd, root, clean_env(**(env or NO_SPARES))), f"pipeline {params}")


def run_floor(root: Path):
    script = REPO / "benchmarks" / "script_floor.py"
    return checked(measure([PY, str(script), "--root", str(root), "--params", PARAMS], root), "script floor")


def bench_pipeline(rounds: int, work: Path, samples: dict[str, list], notes: list[str]) -> Path:
    """floor / naive / cold pipeline side by side per round; noop and one-param reruns after cold.
    Returns the last pipeline project (it has a champion: the dashboard uses it)."""
    template = work / "template"
    make_project(template)
    init_project(template)
    last = None
    for r in range(rounds):
        base = work / f"round{r}"
        roots = {v: make_project(base / v, template) for v in ("floor", "naive", "pipeline")}
        init_projects(list(roots.values()))
        naive_cmds = prepare_naive(roots["naive"])
        order = ["floor", "naive", "pipeline"]
        order = order[r % 3 :] + order[: r % 3]
        for variant in order:
            if variant == "floor":
                m = run_floor(roots["floor"])
                samples["script_floor_s"].append(m.seconds)
            elif variant == "naive":
                seconds, _, kernels = run_naive(roots["naive"], naive_cmds)
                samples["naive_s"].append(seconds)
                samples["naive_kernels"].append(kernels)
            else:
                root = roots["pipeline"]
                before = package_hash()
                m = run_pipeline(root, env=KEEP_WARM)  # leaves kernels warm for the next run
                samples["pipeline_cold_s"].append(m.seconds)
                samples["kernels_started_cold"].append(m.kernels)
                m = run_pipeline(root, env=KEEP_WARM)
                samples["noop_rerun_s"].append(m.seconds)
                samples["kernels_started_noop"].append(m.kernels)
                # three one-parameter edits of model.params.max_depth in params/default.yaml (in
                # place, as a person edits: another file would be a build of its own): only
                # 02_train and 03_evaluate rerun (01_eda does not read model.*)
                # 1. at once: the kernels the cold run left are still importing (the worst case)
                edit = write_params(root, "default", lambda p: p["model"]["params"].update(max_depth=4))
                now = run_pipeline(root, edit, env=KEEP_WARM)
                samples["one_param_immediate_s"].append(now.seconds)
                # 2. the edit as a person makes it: seconds later, the kept kernels warm by then
                samples["spares_warm_after_s"].append(wait_for_spares(root, 2))
                edit = write_params(root, "default", lambda p: p["model"]["params"].update(max_depth=5))
                m = run_pipeline(root, edit, env=KEEP_WARM)
                adopted = m.output.count(ADOPTED)
                samples["one_param_rerun_s"].append(m.seconds)
                samples["kernels_started_one_param"].append(m.kernels)
                samples["kernels_adopted_one_param"].append(adopted)
                # 3. without kept kernels (this run also stops the ones left): what they buy
                edit = write_params(root, "default", lambda p: p["model"]["params"].update(max_depth=6))
                fresh = run_pipeline(root, edit, env=NO_SPARES)
                samples["one_param_fresh_kernels_s"].append(fresh.seconds)
                if package_hash() != before:
                    notes.append(
                        f"round {r}: src/nbops changed during the round (package hash): its noop and "
                        "one-param figures rerun steps they should skip; rerun when nobody edits the package"
                    )
                if (m.kernels, adopted) != (0, 2) or now.output.count(ADOPTED) != 2 or fresh.kernels != 2:
                    notes.append(
                        f"round {r}: one-param reruns: {now.output.count(ADOPTED)} and {adopted} kernels "
                        f"adopted, {m.kernels} started (expected 2, 2 and 0); without spares "
                        f"{fresh.kernels} started (expected 2)"
                    )
        say(
            f"  round {r + 1}/{rounds}: floor {samples['script_floor_s'][-1]:.1f}s  "
            f"naive {samples['naive_s'][-1]:.1f}s  cold {samples['pipeline_cold_s'][-1]:.1f}s  "
            f"noop {samples['noop_rerun_s'][-1]:.2f}s ({samples['kernels_started_noop'][-1]} kernels)  "
            f"one-param {samples['one_param_rerun_s'][-1]:.1f}s (at once "
            f"{samples['one_param_immediate_s'][-1]:.1f}s, without kept kernels "
            f"{samples['one_param_fresh_kernels_s'][-1]:.1f}s; kernels warm "
            f"{samples['spares_warm_after_s'][-1]:.1f}s after a run)"
        )
        if last is not None:
            shutil.rmtree(last.parent, ignore_errors=True)
        last = roots["pipeline"]
    return last


# ------------------------------------------------------------------ scale


def bench_scale(rounds: int, sizes: list[int], work: Path) -> list[dict]:
    """The whole pipeline on synthetic tables of each size (CSV generated before timing)."""
    templates = {}
    for rows in sizes:
        t = make_project(work / f"scale-template-{rows}")

        def edit(p, rows=rows):
            p["data"]["path"] = f"data/raw/bench-{rows}.csv"
            p["data"]["synthetic"].update(rows=rows, path=f"data/raw/bench-{rows}-synthetic.csv")

        name = write_params(t, f"bench-{rows}", edit)
        init_project(t, name)
        templates[rows] = (t, name)
    seconds: dict[int, list[float]] = {n: [] for n in sizes}
    rss: dict[int, list[float]] = {n: [] for n in sizes}
    for r in range(rounds):
        order = sizes[r % len(sizes) :] + sizes[: r % len(sizes)]
        for rows in order:
            t, name = templates[rows]
            root = make_project(work / f"scale-{rows}-{r}", t)
            shutil.copy(t / name, root / name)
            init_project(root, name)
            m = run_pipeline(root, name)
            seconds[rows].append(m.seconds)
            rss[rows].append(m.peak_rss_mb)
            shutil.rmtree(root, ignore_errors=True)
        say(
            "  scale round "
            + f"{r + 1}/{rounds}: "
            + "  ".join(f"{n:,}: {seconds[n][-1]:.1f}s" for n in sizes)
        )
    return [
        {
            "rows": n,
            "seconds": round(harness.median(seconds[n]), 3),
            "peak_rss_mb": round(harness.median(rss[n]), 1),
            "samples_s": [round(x, 3) for x in seconds[n]],
            "samples_rss_mb": [round(x, 1) for x in rss[n]],
        }
        for n in sizes
    ]


# ------------------------------------------------------------------ sweep (bench_sweep.py, optional)


def bench_sweep(notes: list[str]) -> dict | None:
    try:
        from benchmarks.bench_sweep import measure_sweep
    except ImportError:
        notes.append("sweep: benchmarks/bench_sweep.py absent, key omitted")
        return None
    sweep = measure_sweep()
    notes.append(
        f"sweep: one run of {sweep['points']} points per executor, worker count and warm kernels on/off, "
        "not a median (each run is minutes long: the thirteen runs take about 30 min on 2 cores)"
    )
    return sweep


# ------------------------------------------------------------------ main

# How each part's notes begin: a partial run drops the old notes of the parts it measured again.
NOTE_PREFIXES = {
    "pipeline": ("round ",),
    "setup": ("setup_cold_s",),
    "sweep": ("sweep:",),
    "dashboard": ("dashboard memory:",),
    "image": ("image:",),
}


def _note_of(note: str, parts) -> bool:
    return any(note.startswith(NOTE_PREFIXES.get(part, ())) for part in parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=PARTS, help="measure only these parts")
    ap.add_argument("--out", type=Path, default=harness.RESULTS)
    args = ap.parse_args(argv)
    quick = os.environ.get("BENCH_QUICK") == "1"
    rounds = int(os.environ.get("BENCH_ROUNDS") or (3 if quick else 5))
    sizes = [1_000, 10_000, 100_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    setup_rounds = int(os.environ.get("BENCH_SETUP_ROUNDS") or 1)
    parts = args.only or PARTS
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    samples: dict[str, list] = {
        k: []
        for k in (
            "script_floor_s naive_s pipeline_cold_s noop_rerun_s one_param_rerun_s kernels_started_noop "
            "kernels_started_cold kernels_started_one_param kernels_adopted_one_param "
            "one_param_fresh_kernels_s one_param_immediate_s spares_warm_after_s naive_kernels "
            "dashboard_cold_tti_s dashboard_cold_new_process_tti_s dashboard_kernel_cpu_s "
            "dashboard_kernel_new_process_cpu_s "
            "dashboard_tti_s predict_ms setup_cold_s pip_setup_cold_s"
        ).split()
    }
    from benchmarks.bench_bounds import BOUNDS_KEYS

    samples.update({k: [] for k in BOUNDS_KEYS})
    from benchmarks.bench_image import IMAGE_KEYS

    samples.update({k: [] for k in IMAGE_KEYS})
    from benchmarks.bench_lab import LAB_KEYS

    samples.update({k: [] for k in LAB_KEYS})
    from benchmarks.bench_bootstrap import BOOTSTRAP_KEYS

    samples.update({k: [] for k in BOOTSTRAP_KEYS})
    notes: list[str] = []
    if quick:
        notes.append(f"BENCH_QUICK: {rounds} rounds, scale up to {sizes[-1]:,} rows")
    scale = sweep = None
    work = Path(tempfile.mkdtemp(prefix="nbops-bench-"))
    try:
        champion_project = None
        if "pipeline" in parts:
            say(f"pipeline: {rounds} rounds of floor / naive / cold + noop + one-param")
            champion_project = bench_pipeline(rounds, work, samples, notes)
        elif "dashboard" in parts or "image" in parts:  # a champion to serve: one pipeline run, not timed
            champion_project = make_project(work / "dashboard-project")
            init_project(champion_project)
            run_pipeline(champion_project)
        if "dashboard" in parts:
            from benchmarks.dashboard_bench import bench_dashboard, bench_dashboard_memory

            say(f"dashboard: {rounds} rounds of cold (forked, new process) / preheated page loads, 50 clicks")
            bench_dashboard(champion_project, rounds, samples, work)
            say("dashboard: memory with 1, 10 and 50 anonymous page views")
            notes.append(bench_dashboard_memory(champion_project, samples, work))
        if "image" in parts:
            from benchmarks.bench_image import bench_image

            say(f"image: size, and {rounds} rounds of cold starts (container and make space-serve)")
            notes.append(bench_image(champion_project, rounds, samples, work))
        if "lab" in parts:
            from benchmarks.bench_lab import bench_lab

            say(f"lab: {rounds} rounds of nbops lab start, Run All of 02_train in Lab, the step headless")
            bench_lab(rounds, work, samples)
        if "scale" in parts:
            say(f"scale: {rounds} rounds over {', '.join(f'{n:,}' for n in sizes)} rows")
            scale = bench_scale(rounds, sizes, work)
        if "setup" in parts:
            from benchmarks.setup_bench import bench_setup

            say(f"setup: {setup_rounds} cold install(s) each with uv (make setup) and pip")
            bench_setup(setup_rounds, samples, work)
            if setup_rounds < 5:
                notes.append(
                    f"setup_cold_s, pip_setup_cold_s: {setup_rounds} run(s), not 5 (a cold pip install "
                    "takes minutes; BENCH_SETUP_ROUNDS=5 for the full count)"
                )
        if "sweep" in parts:
            sweep = bench_sweep(notes)
        if "bootstrap" in parts:
            from benchmarks.bench_bootstrap import bench_bootstrap

            say(f"bootstrap: {rounds} rounds of the gate's paired bootstrap at 1e6 held-out rows, both tasks")
            bench_bootstrap(rounds, samples)
        if "bounds" in parts:
            from benchmarks.bench_bounds import bench_bounds

            say(f"bounds: {rounds} rounds of RSS per MB of CSV (1e5, 1e6 rows) and two refusals")
            bench_bounds(rounds, work, samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = harness.summarize({k: v for k, v in samples.items() if k != "predict_ms"})
    if samples["predict_ms"]:
        medians["predict_p95_ms"] = harness.p95(samples["predict_ms"])
        medians["predict_median_ms"] = harness.median(samples["predict_ms"])
    for k in (
        "kernels_started_noop",
        "kernels_started_cold",
        "kernels_started_one_param",
        "kernels_adopted_one_param",
        "naive_kernels",
    ):
        if samples[k]:
            medians[k] = max(samples[k]) if k == "kernels_started_noop" else int(harness.median(samples[k]))
    results = harness.build_results(
        medians,
        {k: v for k, v in samples.items() if v},
        rounds=rounds,
        machine=harness.machine_info(),
        notes=notes,
        scale=scale,
        sweep=sweep,
        started=started,
        seconds=time.perf_counter() - t0,
    )
    if args.only and args.out.exists():  # a partial run keeps the other parts' figures
        old = json.loads(args.out.read_text())
        old_meta = old.pop("meta", {})
        meta = results.pop("meta")
        meta["samples"] = {**old_meta.get("samples", {}), **meta["samples"]}
        meta["notes"] = meta["notes"] + [
            n for n in old_meta.get("notes", []) if n not in meta["notes"] and not _note_of(n, parts)
        ]
        results = {**old, **results, "meta": meta}
    harness.write_results(results, args.out)
    table = harness.format_table(results)
    print(table)
    say(f"wrote {args.out}")
    if args.out == harness.RESULTS:
        page = REPO / "docs" / "benchmarks.md"
        page.write_text(harness.replace_block(page.read_text(encoding="utf-8"), table), encoding="utf-8")
        say(f"updated the tables in {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
