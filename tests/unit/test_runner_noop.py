"""The no-op fast path: a rerun with nothing changed parses nothing, and any change to what the
plan is made from sends the run down the full path."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from nbops.layout import build_dir, reports_dir
from nbops.products import read_json, write_json
from nbops.runner import noop, stamps
from tests.conftest import REPO


@pytest.fixture
def last_run(tmp_path, monkeypatch):
    """A project whose build folder looks like a successful run left it (stamps, table,
    reports) and the record that run wrote."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "p"
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    (root / "params").mkdir()
    params = root / "params" / "default.yaml"
    params.write_text("model:\n  params:\n    max_depth: 6\n")
    data = root / "data" / "raw" / "synthetic.csv"
    data.parent.mkdir(parents=True)
    data.write_text("Age,Drug\n30,drugY\n")
    build, reports = build_dir(root, "default"), reports_dir(root, "default")
    keys = {step: f"key-{step}" for step in ("00_validate", "01_eda", "02_train", "03_evaluate")}
    (build / "00_validate").mkdir(parents=True)
    (build / "00_validate" / "table.parquet").write_bytes(b"table")
    write_json(build / "03_evaluate" / "metrics.json", {"decision": {"verdict": "promote"}})
    for step, key in keys.items():  # each stamp records its step's products, as write_stamp does
        products = stamps.product_hashes(build / step) if (build / step).is_dir() else {}
        write_json(build / step / ".stamp.json", {"key": key, "products": products})
    reports.mkdir(parents=True)
    (reports / "index.html").write_text("<html></html>")
    plan = SimpleNamespace(
        root=root, params_file=params, build=build, reports=reports, keys=keys, data_path=data,
        synthetic=True, params=SimpleNamespace(data=SimpleNamespace(path="data/raw/real.csv")),
    )  # fmt: skip
    noop.remember_run(plan)

    def again():
        return noop.unchanged_since_last_run(params, root, build, reports)

    return SimpleNamespace(root=root, params=params, data=data, build=build, reports=reports, again=again)


def test_nothing_changed_skips_every_step_and_reports_the_last_evaluation(last_run, capsys):
    result = last_run.again()
    assert result is not None and result.ok
    assert result.skipped == ["00_validate", "01_eda", "02_train", "03_evaluate"] and result.ran == []
    assert result.evaluation == {"decision": {"verdict": "promote"}}
    out = capsys.readouterr().out
    assert "SYNTHETIC: put the real CSV at data/raw/real.csv" in out
    assert out.count("skipped (unchanged)") == 4


CHANGES = {
    "params file": lambda p, m: p.params.write_text("model:\n  params:\n    max_depth: 4\n"),
    "a notebook": lambda p, m: (p.root / "notebooks" / "02_train.ipynb").write_text("{}"),
    "the data": lambda p, m: p.data.write_text("Age,Drug\n31,drugY\n"),
    "the real CSV appears": lambda p, m: (p.root / "data" / "raw" / "real.csv").write_text("x"),
    "the tracking store": lambda p, m: m.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
    "a step's stamp": lambda p, m: write_json(p.build / "02_train" / ".stamp.json", {"key": "other"}),
    "a stamp removed": lambda p, m: (p.build / "03_evaluate" / ".stamp.json").unlink(),
    "the validated table removed": lambda p, m: (p.build / "00_validate" / "table.parquet").unlink(),
    "the reports removed": lambda p, m: shutil.rmtree(p.reports),
    "the record damaged": lambda p, m: (p.build / noop.LAST_RUN).write_text("{"),
    "the package's source": lambda p, m: m.setattr(noop, "package_hash", lambda: "edited"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_what_the_plan_reads_takes_the_full_path(last_run, monkeypatch, change):
    assert last_run.again() is not None  # the control
    CHANGES[change](last_run, monkeypatch)
    assert last_run.again() is None


def test_the_record_names_the_data_file_it_was_made_from(last_run):
    record = read_json(last_run.build / noop.LAST_RUN)
    assert Path(record["data_path"]) == last_run.data and record["synthetic"] is True


@pytest.mark.parametrize("change", ["edited", "deleted"])
def test_a_product_changed_by_hand_sends_the_run_down_the_full_path(last_run, change):
    metrics = last_run.build / "03_evaluate" / "metrics.json"
    metrics.write_text("{}") if change == "edited" else metrics.unlink()
    assert last_run.again() is None
