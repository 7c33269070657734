"""The Python entry points as the workflows call them: each step's `run:` script and `env:` are
read from the YAML, its `${{ }}` expressions filled from a simulated event payload, and the
script run (bash, with `python` and `make` shims) or its command called in-process with fakes.
No network: the Hub, the registry and the pipeline are replaced."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
HEAD_SHA = "1234567890abcdef1234567890abcdef12345678"  # the commit the CI run tested
MAIN_SHA = "fedcba0987654321fedcba0987654321fedcba09"  # main's head when workflow_run fires
RUN_ID = 987654321
RUN_URL = f"https://github.com/acme/nbops/actions/runs/{RUN_ID}"
_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))


def context(tmp_path: Path, **event) -> dict:
    """The contexts a `${{ }}` reads: a completed CI `workflow_run` of a pull request by default."""
    payload = {
        "workflow_run": {
            "id": RUN_ID,
            "html_url": RUN_URL,
            "head_sha": HEAD_SHA,
            "event": "pull_request",
            "conclusion": "failure",
            "head_branch": "feature",
            "head_repository": {"full_name": "acme/nbops"},
        }
    }
    payload["workflow_run"].update(event)
    return {
        "github": {
            "event": payload,
            "sha": MAIN_SHA,
            "repository": "acme/nbops",
            "server_url": "https://github.com",
            "run_id": 1,
            "run_attempt": 1,
            "token": "ghs_test",
        },
        "runner": {"temp": str(tmp_path / "runner-temp")},
        "vars": {"HF_SPACE_ID": "acme/drugs", "HF_SPACE_VERSION_PATH": ""},
        "secrets": {"HF_TOKEN": "hf_test"},
        "inputs": {},
        "env": {},
        "steps": {},
    }


def evaluate(expr: str, ctx: dict) -> str:
    """`a.b.c`, `'literal'` and `x || y` — what the env blocks of these workflows use."""
    for alternative in (a.strip() for a in expr.split("||")):
        if alternative.startswith("'") and alternative.endswith("'"):
            value = alternative[1:-1]
        else:
            assert re.fullmatch(r"[A-Za-z_][\w.-]*", alternative), f"unsupported expression: {expr!r}"
            value = ctx
            for part in alternative.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, "", False):
            return str(value)
    return ""


def fill(value, ctx: dict) -> str:
    return _EXPR.sub(lambda m: evaluate(m.group(1), ctx), str(value))


def find_step(doc: dict, pattern: str) -> tuple[dict, dict]:
    """(job, step) of the one step whose `run:` matches `pattern`."""
    found = [
        (job, step)
        for job in doc["jobs"].values()
        for step in job.get("steps", [])
        if re.search(pattern, str(step.get("run", "")))
    ]
    assert len(found) == 1, f"expected one step running {pattern!r}, found {len(found)}"
    return found[0]


def step_env(doc: dict, job: dict, step: dict, ctx: dict) -> dict[str, str]:
    """The workflow's, the job's and the step's env, in that order, expressions filled."""
    env: dict[str, str] = {}
    for block in (doc.get("env") or {}, job.get("env") or {}, step.get("env") or {}):
        for key, value in block.items():
            ctx["env"] = env
            env[key] = fill(value, ctx)
    return env


def run_script(script: str, env: dict[str, str], cwd: Path, shims: Path) -> subprocess.CompletedProcess:
    """The step as the runner's `bash -e {0}` runs it, with `python` this interpreter."""
    shims.mkdir(parents=True, exist_ok=True)
    python = shims / "python"
    if not python.exists():
        python.symlink_to(sys.executable)
    full = {"PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ------------------------------------------------------------------ pr-comment.yml → nbops.comment


@pytest.fixture
def comment_step(tmp_path):
    doc = workflow("pr-comment.yml")
    job, step = find_step(doc, r"-m nbops\.comment\b")
    ctx = context(tmp_path)
    temp = Path(ctx["runner"]["temp"])
    artifact = temp / "pr-summary"  # where the download step puts the CI run's artifact
    artifact.mkdir(parents=True)
    (artifact / "pr-number.txt").write_text("17\n", encoding="utf-8")
    output = tmp_path / "github-output"
    output.touch()

    def run(ctx=ctx):
        env = step_env(doc, job, step, ctx)
        env.update(
            RUNNER_TEMP=str(temp),
            GITHUB_OUTPUT=str(output),
            GITHUB_SERVER_URL="https://github.com",
            GITHUB_REPOSITORY="acme/nbops",
        )
        result = run_script(step["run"], env, REPO, tmp_path / "bin")
        body = temp / "comment.md"
        return result, output.read_text(), body.read_text(encoding="utf-8") if body.exists() else None

    return SimpleNamespace(run=run, artifact=artifact, ctx=ctx)


def test_a_ci_run_that_stopped_before_any_report_still_gets_its_comment(comment_step):
    """The artifact holds only pr-number.txt: the step must succeed and the body must say the
    run stopped, so last push's "pass" does not stay up."""
    result, outputs, body = comment_step.run()
    assert result.returncode == 0, result.stderr
    assert "number=17\n" in outputs
    assert body.startswith("<!-- nbops-summary -->\n")
    assert f"The pipeline stopped before any report: see the [run]({RUN_URL})" in body
    assert "commit 1234567890ab" in body


def test_a_ci_run_with_its_summary_gets_the_summary(comment_step):
    (comment_step.artifact / "summary.md").write_text("<!-- nbops-summary -->\n## Gate: reject\n")
    result, outputs, body = comment_step.run()
    assert result.returncode == 0, result.stderr
    assert "number=17\n" in outputs and "## Gate: reject" in body and "stopped" not in body


def test_a_forged_pr_number_stops_the_step_before_anything_is_posted(comment_step):
    (comment_step.artifact / "pr-number.txt").write_text("17; curl evil")
    result, outputs, body = comment_step.run()
    assert result.returncode != 0 and "number=" not in outputs and body is None


# ------------------------------------------------------------------ cd.yml → nbops.serve.deploy


def test_the_space_commit_names_the_commit_ci_tested_not_mains_head(tmp_path, monkeypatch):
    """Under workflow_run, GITHUB_SHA is main's head: the step passes the run's head_sha."""
    import huggingface_hub

    from nbops.ml import tracking
    from nbops.serve import deploy

    doc = workflow("cd.yml")
    job, step = find_step(doc, r"\bmake (-s )?deploy\b")
    ctx = context(tmp_path, event="push", conclusion="success", head_branch="main")
    env = step_env(doc, job, step, ctx)
    assert env.get("HEAD_SHA") == HEAD_SHA, "the deploy step must pass the run's head_sha as HEAD_SHA"
    for key, value in {**env, "GITHUB_SHA": MAIN_SHA}.items():
        monkeypatch.setenv(key, value)

    uploads = []

    class Api:
        def space_info(self, repo_id):
            return SimpleNamespace(sha="0ld")

        def hf_hub_download(self, **kw):
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError("no marker")

        def upload_folder(self, **kw):
            uploads.append(kw)
            return SimpleNamespace(
                commit_url="https://huggingface.co/spaces/acme/drugs/commit/abc", oid="abc"
            )

    folder = tmp_path / "space" / "champion"
    folder.mkdir(parents=True)
    (folder / "model_card.json").write_text(json.dumps({"name": "drug-classifier", "version": "4"}))
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token: Api())
    monkeypatch.setattr(tracking, "configure_tracking", lambda root: "sqlite:///unused")
    monkeypatch.setattr(deploy, "resolve_champion", lambda name: "4")
    args = ["--params", "params/smoke.yaml", "--space-dir", str(tmp_path / "space"), "--no-wait"]
    assert deploy.main(["--root", str(REPO), *args, "--space-id", env["HF_SPACE_ID"]]) == 0
    assert uploads[0]["commit_message"] == "Deploy drug-classifier v4 (champion) from 1234567890ab"


# ------------------------------------------------------------------ retrain.yml → nbops drift


@pytest.mark.parametrize("force", ["", "false"])
def test_the_scheduled_retrain_with_no_champion_runs_the_pipeline(tmp_path, monkeypatch, force):
    """A fresh store (the cached registry evicted): the scheduled run's `make drift` must train
    a champion, not fail every week."""
    from nbops.ml import drift, tracking
    from nbops.runner import drift as drift_command
    from nbops.runner import pipeline

    doc = workflow("retrain.yml")
    job, step = find_step(doc, r"\bmake (-s )?drift\b")
    ctx = context(tmp_path)
    ctx["inputs"] = {"force": force}  # a schedule has no inputs: empty
    env = step_env(doc, job, step, ctx)
    shims = tmp_path / "bin"
    shims.mkdir()
    calls = tmp_path / "make-calls"
    (shims / "make").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {shlex.quote(str(calls))}\n')
    (shims / "make").chmod(0o755)
    result = run_script(step["run"], env, tmp_path, shims)
    assert result.returncode == 0, result.stderr
    target, *assignments = calls.read_text().splitlines()
    assert target == "drift"
    flags = shlex.split(dict(a.split("=", 1) for a in assignments)["ARGS"])

    def no_champion(params, root, client=None, download=None):
        raise drift.NoChampionToCompare(f"registered model {params.registry.model_name!r} has no champion")

    ran = []
    monkeypatch.setattr(tracking, "configure_tracking", lambda root: "sqlite:///unused")
    monkeypatch.setattr(drift, "check_drift", no_champion)
    monkeypatch.setattr(pipeline, "main_run", lambda *a: ran.append(a) or 0)
    options = {"--retrain": "retrain", "--force": "force", "--fail-on-drift": "fail_on_drift"}
    kwargs = {options[f]: True for f in flags}
    code = drift_command.main_drift(str(REPO / "params" / "smoke.yaml"), str(tmp_path), **kwargs)
    assert code == 0 and len(ran) == 1
