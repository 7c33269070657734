"""The harness's pure parts: statistics, results.json shape, the Markdown table (no timing)."""

from __future__ import annotations

import json

import pytest

from benchmarks import harness


def test_median_of_odd_and_even_counts():
    assert harness.median([3, 1, 2]) == 2
    assert harness.median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        harness.median([])


def test_p95_interpolates_between_ranks_like_numpy():
    values = list(range(1, 101))  # 1..100
    assert harness.p95(values) == pytest.approx(95.05)
    assert harness.percentile([5.0], 95) == 5.0
    assert harness.percentile([1, 2], 50) == 1.5
    with pytest.raises(ValueError):
        harness.percentile([1, 2], 101)


def test_ratios_come_from_the_medians_and_need_both_sides():
    out = harness.add_ratios({"pipeline_cold_s": 12.0, "script_floor_s": 8.0, "naive_s": 30.0})
    assert out["pipeline_ratio"] == 1.5
    assert out["naive_over_pipeline"] == 2.5
    assert "one_param_over_cold" not in out


def test_the_one_param_rerun_is_reported_with_and_without_kept_kernels():
    out = harness.add_ratios(
        {"pipeline_cold_s": 10.0, "one_param_rerun_s": 4.0, "one_param_fresh_kernels_s": 8.0}
    )
    assert out["one_param_over_cold"] == 0.4 and out["one_param_fresh_over_cold"] == 0.8
    assert list(harness.KEYS).index("one_param_fresh_kernels_s") > list(harness.KEYS).index(
        "one_param_rerun_s"
    )


def test_results_have_the_issue_keys_at_top_level_and_round_trip(tmp_path):
    medians = {"script_floor_s": 8.0, "pipeline_cold_s": 10.0, "noop_rerun_s": 0.3, "kernels_started_noop": 0}
    scale = [{"rows": 1000, "seconds": 9.0, "peak_rss_mb": 800.0}]
    results = harness.build_results(
        medians,
        {"noop_rerun_s": [0.3, 0.31]},
        rounds=5,
        machine={"nproc": 2, "cpu": "x", "ram_gb": 8},
        scale=scale,
    )
    assert results["pipeline_ratio"] == 1.25
    assert results["kernels_started_noop"] == 0
    assert results["scale"] == scale
    assert results["meta"]["rounds"] == 5
    assert "sweep" not in results
    path = harness.write_results(results, tmp_path / "results.json")
    assert json.loads(path.read_text()) == results


def test_table_marks_targets_and_lists_scale_and_machine():
    results = harness.build_results(
        {"pipeline_cold_s": 20.0, "script_floor_s": 10.0, "noop_rerun_s": 0.2, "predict_p95_ms": 90.0},
        {},
        rounds=5,
        machine={"nproc": 2, "cpu": "Some CPU", "ram_gb": 16, "python": "3.11"},
        notes=["setup: one run"],
        scale=[
            {"rows": 100_000, "seconds": 10.0, "peak_rss_mb": 900.0},
            {"rows": 1_000_000, "seconds": 60.0, "peak_rss_mb": 2000.0},
        ],
    )
    table = harness.format_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("| figure | value | target |")
    assert any(line.startswith("| `pipeline_ratio` | 2.00× | ≤ 1.5 ✗") for line in lines)
    assert any(line.startswith("| `noop_rerun_s` | 0.20 s | ≤ 0.5 ✓") for line in lines)
    assert any(line.startswith("| `predict_p95_ms` | 90 ms | ≤ 150 ✓") for line in lines)
    assert "| 1,000,000 | 60.00 | 2000 | ≤ 90 s, ≤ 3 GB ✓ |" in lines
    assert "Some CPU" in table and "2 cores" in table and "setup: one run" in table
    assert "naive_s" not in table  # absent figures are left out, not shown as zero


def test_verdict_is_empty_for_keys_without_a_target():
    assert harness.verdict("naive_s", 10.0) == ""
    assert harness.verdict("kernels_started_noop", 0) == "= 0 ✓"
    assert harness.verdict("kernels_started_noop", 1) == "= 0 ✗"


def test_readme_block_is_replaced_in_place_or_appended():
    start, end = harness.README_START, harness.README_END
    text = f"# x\n\n## Benchmarks\n\n{start}\nold\n{end}\n\n## After\n"
    out = harness.replace_block(text, "new table")
    assert out == f"# x\n\n## Benchmarks\n\n{start}\nnew table\n{end}\n\n## After\n"
    assert harness.replace_block("# x\n", "t").endswith(f"{start}\nt\n{end}\n")


def test_sweep_figures_become_a_table_and_odd_shapes_stay_readable():
    split = {"point_s": 5.0, "kernel_wait_s": 0.01, "cells_s": 1.5, "mlflow_logging_s": 2.0, "runner_s": 1.25}
    sweep = {  # the shape benchmarks/bench_sweep.measure_sweep returns, after a JSON round trip
        "points": 16,
        "one_by_one_s": 200.0,
        "one_by_one_load_1m": 3.5,
        "local": {"1": {"seconds": 120.0, "points_per_min": 8.0, "speedup_vs_one_by_one": 1.67}},
        "dask": {"2": {"seconds": 90.0, "points_per_min": 10.7, "speedup_vs_one_by_one": 2.22}},
        "dask (warm off)": {
            "2": {
                "seconds": 150.0,
                "points_per_min": 6.4,
                "speedup_vs_one_by_one": 1.33,
                "load_1m": 4.25,
                "split": split,
            }
        },
    }
    lines = harness.sweep_table(sweep)
    assert (
        lines[0]
        == "sweep of 16 points (benchmarks/bench_sweep.py); one pipeline run per point: 200.0 s (load 3.5):"
    )
    assert "| local | 1 | 120.0 | 8.0 | 1.67× | – | – | – | – | – | – |" in lines
    assert "| dask | 2 | 90.0 | 10.7 | 2.22× | – | – | – | – | – | – |" in lines
    assert "| dask (warm off) | 2 | 150.0 | 6.4 | 1.33× | 4.2 | 5.00 | 0.01 | 1.50 | 2.00 | 1.25 |" in lines
    assert '"x": 1' in "\n".join(harness.sweep_table({"x": 1}))
    table = harness.format_table(harness.build_results({}, {}, rounds=1, machine={}, sweep=sweep))
    assert "sweep of 16 points" in table


def test_a_partial_run_drops_the_old_notes_of_the_parts_it_measured_again():
    from benchmarks.run import _note_of

    setup_note = "setup_cold_s, pip_setup_cold_s: 1 run(s), not 5"
    assert _note_of(setup_note, ["setup"]) and not _note_of(setup_note, ["pipeline", "dashboard"])
    assert _note_of("round 2: one-param reruns: ...", ["pipeline"])
    assert _note_of("sweep: one run of 16 points", ["sweep"]) and not _note_of("sweep: x", ["scale"])
