"""Runs of different params files never overwrite each other: params/smoke.yaml and a second
params file (another split seed and a shallower tree) run A, B, A, B through the real CLI; the
second run of each is a no-op that starts no kernel and registers nothing, both reports folders
keep their own metrics, and reports/index.html lists both with their verdicts."""

import json
import re

import pytest
from mlflow import MlflowClient

from nbops.layout import OWNER_FILE, build_dir, reports_dir, reports_index
from tests.conftest import make_project, nbops, write_params

pytestmark = pytest.mark.e2e
MODEL = "drug-classifier"


def versions(root):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    return sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))


def run(root, name):
    res = nbops(root, "run", "--params", f"params/{name}.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.splitlines()[-1] == f"reports: {reports_dir(root, name) / 'index.html'}"
    return res.stdout


def gate(out):
    (line,) = re.findall(r"^gate: (.*)$", out, re.M)
    return line


@pytest.fixture(scope="module")
def alternated(tmp_path_factory):
    """A, B, A, B: what each run printed and the registry's versions after it."""
    root = make_project(tmp_path_factory.mktemp("per-params") / "project")

    def other(p):
        p["split"].update(seed=7)
        p["model"]["params"].update(max_depth=4)

    write_params(root, "other", other)
    outs, after = [], []
    for name in ("smoke", "other", "smoke", "other"):
        outs.append(run(root, name))
        after.append(versions(root))
    return root, outs, after


def test_the_first_run_of_each_params_file_trains_and_registers(alternated):
    root, outs, after = alternated
    assert "▶ 02_train" in outs[0] and "▶ 02_train" in outs[1]
    assert gate(outs[0]) == "promote (challenger v1, champion before: none)"
    assert gate(outs[1]).endswith("(challenger v2, champion before: v1)")
    assert after[:2] == [[1], [1, 2]]


def test_switching_back_to_an_unchanged_params_file_is_a_no_op(alternated):
    root, outs, after = alternated
    for out in outs[2:]:
        assert out.count("skipped (unchanged)") == 4, out
        assert "▶" not in out  # no step started, so no kernel
        assert "champion: drug-classifier v" in out and "gate:" not in out
    assert after[2] == after[3] == [1, 2]  # no version added by either switch back


def test_each_reports_folder_keeps_its_own_metrics(alternated):
    root, outs, after = alternated
    metrics = {n: json.loads((reports_dir(root, n) / "metrics.json").read_text()) for n in ("smoke", "other")}
    assert metrics["smoke"]["challenger"]["version"] == "1"
    assert metrics["other"]["challenger"]["version"] == "2"
    for name in ("smoke", "other"):  # each folder's copy is its own build's gate record
        built = json.loads((build_dir(root, name) / "03_evaluate" / "metrics.json").read_text())
        assert metrics[name] == built
        assert (build_dir(root, name) / OWNER_FILE).read_text() == f"params/{name}.yaml\n"
        page = (reports_dir(root, name) / "index.html").read_text()
        assert f"<code>params/{name}.yaml</code>" in page
    holdouts = {
        n: json.loads((build_dir(root, n) / "02_train" / "holdout.json").read_text())["holdout_ids"]
        for n in ("smoke", "other")
    }
    assert holdouts["smoke"] != holdouts["other"]  # split seed 42 and 7
    assert "max_depth=4" in (reports_dir(root, "other") / "index.html").read_text()
    assert "max_depth=4" not in (reports_dir(root, "smoke") / "index.html").read_text()


def test_the_listing_names_both_with_their_verdicts_and_links(alternated):
    root, outs, after = alternated
    page = reports_index(root).read_text()
    for name, out in (("smoke", outs[0]), ("other", outs[1])):
        assert (
            f'<td><a href="{name}/index.html">{name}</a></td><td><code>params/{name}.yaml</code></td>' in page
        )
        assert f">{gate(out)}</td></tr>" in page
    assert page.index('href="other/index.html"') < page.index('href="smoke/index.html"')  # newest first


def test_a_params_file_whose_stem_another_owns_is_refused_and_touches_nothing(alternated):
    root, outs, after = alternated
    (root / "params" / "old").mkdir()
    (root / "params" / "old" / "smoke.yaml").write_text((root / "params" / "smoke.yaml").read_text())
    stamp = (build_dir(root, "smoke") / "02_train" / ".stamp.json").read_text()
    res = nbops(root, "run", "--params", "params/old/smoke.yaml")
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "error: params/old/smoke.yaml: the name 'smoke' (build/smoke/, reports/smoke/) belongs to "
        "params/smoke.yaml; rename one of the two params files"
    )
    assert "▶" not in res.stdout and versions(root) == [1, 2]
    assert (build_dir(root, "smoke") / "02_train" / ".stamp.json").read_text() == stamp
    again = run(root, "smoke")  # the owner's cache is intact: still a no-op
    assert again.count("skipped (unchanged)") == 4 and "▶" not in again


def test_report_rerenders_one_params_files_folder_only(alternated):
    root, outs, after = alternated
    other_index = reports_dir(root, "other") / "index.html"
    before = other_index.stat().st_mtime_ns
    res = nbops(root, "report", "--params", "params/smoke.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"reports: {reports_dir(root, 'smoke') / 'index.html'}"
    assert other_index.stat().st_mtime_ns == before
    assert 'href="other/index.html"' in reports_index(root).read_text()


def test_report_keeps_the_listing_line_of_a_failed_run(alternated, tmp_path):
    """`nbops report` re-renders from the build folder; the listing keeps what the run recorded,
    so a run that failed is not shown as a success after it."""
    from tests.conftest import copy_project

    root = copy_project(alternated[0], tmp_path / "project")
    record = reports_dir(root, "smoke") / "run.json"
    failed = {
        **json.loads(record.read_text()),
        "verdict": "failed at 02_train, cell 7: RuntimeError",
        "ok": False,
    }
    record.write_text(json.dumps(failed))
    res = nbops(root, "report", "--params", "params/smoke.yaml")
    assert res.returncode == 0, res.stderr
    assert json.loads(record.read_text()) == failed
    assert "failed at 02_train, cell 7: RuntimeError" in reports_index(root).read_text()
