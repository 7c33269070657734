"""The workflows read the reports folder the pipeline writes: reports/<params stem>/ (nbops.layout),
`make ci-pipeline`'s reports/<CI_PARAMS stem>-ci/, run here on a folder laid out as CI leaves it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from nbops.layout import params_name, reports_dir
from tests.workflows.test_workflow_logic import REPO, load, run_script

SUMMARY = "<!-- nbops-summary -->\n## ✅ Gate: promote\n"


def ci_pipeline_params(*make_args: str) -> str:
    """The params file `make ci-pipeline` runs, from make's dry run."""
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "ci-pipeline", *make_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    found = re.findall(r"nbops run --params (\S+)", out.stdout)
    assert len(found) == 1, out.stdout
    return found[0]


def step_named(job: dict, start: str) -> dict:
    (step,) = [s for s in job["steps"] if s.get("name", "").startswith(start)]
    return step


def test_ci_reports_is_the_folder_make_ci_pipeline_writes():
    params = ci_pipeline_params()
    assert params == "build/.ci/default-ci.yaml"
    assert load("ci.yml")["env"]["CI_REPORTS"] == reports_dir(Path(), params_name(params)).as_posix()
    # another CI_PARAMS gets a folder of its own, never params/smoke.yaml's reports/smoke/
    assert params_name(ci_pipeline_params("CI_PARAMS=params/smoke.yaml")) == "smoke-ci"


@pytest.mark.parametrize("job_name", ["pipeline-pr", "pipeline-main"])
def test_the_job_summary_shows_the_ci_runs_summary_not_another_params_files(tmp_path, job_name):
    doc = load("ci.yml")
    env = {"CI_REPORTS": doc["env"]["CI_REPORTS"], "GITHUB_STEP_SUMMARY": str(tmp_path / "job.md")}
    step = step_named(doc["jobs"][job_name], "Gate verdict and metrics in the job summary")
    result = run_script(step["run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    said = (tmp_path / "job.md").read_text()
    assert said == "No reports/default-ci/summary.md: the pipeline stopped before any report.\n"

    (tmp_path / "job.md").unlink()
    (tmp_path / "reports" / "default").mkdir(parents=True)
    (tmp_path / "reports" / "default" / "summary.md").write_text("another params file's\n")
    (tmp_path / "reports" / "default-ci").mkdir()
    (tmp_path / "reports" / "default-ci" / "summary.md").write_text(SUMMARY)
    result = run_script(step["run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "job.md").read_text() == SUMMARY


def test_the_pr_summary_artifact_holds_the_ci_runs_summary(tmp_path):
    doc = load("ci.yml")
    step = step_named(doc["jobs"]["pipeline-pr"], "PR number beside the summary")
    (tmp_path / "reports" / "default-ci").mkdir(parents=True)
    (tmp_path / "reports" / "default-ci" / "summary.md").write_text(SUMMARY)
    env = {"CI_REPORTS": doc["env"]["CI_REPORTS"], "PR_NUMBER": "17", "RUNNER_TEMP": str(tmp_path / "tmp")}
    result = run_script(step["run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    artifact = tmp_path / "tmp" / "pr-summary"
    assert (artifact / "summary.md").read_text() == SUMMARY
    assert (artifact / "pr-number.txt").read_text() == "17\n"
    upload = step_named(doc["jobs"]["pipeline-pr"], "Upload the reports")
    assert upload["with"]["path"] == "reports/"  # reports/index.html and every folder it links


def test_retrain_shows_the_drift_and_gate_of_its_params_file(tmp_path):
    doc = load("retrain.yml")
    assert doc["env"]["REPORTS"] == reports_dir(Path(), params_name(doc["env"]["PARAMS"])).as_posix()
    step = step_named(doc["jobs"]["drift"], "Drift verdict and gate in the job summary")
    folder = tmp_path / doc["env"]["REPORTS"]
    folder.mkdir(parents=True)
    (folder / "drift.md").write_text("## Drift check: drift\n")
    (folder / "summary.md").write_text(SUMMARY)
    env = {"REPORTS": doc["env"]["REPORTS"], "GITHUB_STEP_SUMMARY": str(tmp_path / "job.md")}
    result = run_script(step["run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "job.md").read_text() == "## Drift check: drift\n" + SUMMARY
