"""The GitHub Actions workflows, checked offline: schema, zizmor, and the project's hardening rules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+(\.\d+){0,2}\s*$")
MLFLOW_SECRETS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN")
PR_TRIGGERS = {"pull_request", "pull_request_target"}
NOT_ON_PR = "github.event_name != 'pull_request'"


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def triggers(doc: dict) -> set[str]:
    on = doc["on"]
    return {on} if isinstance(on, str) else set(on)


def steps(doc: dict):
    for job_id, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def hardening_problems(doc: dict, text: str) -> list[str]:
    """Every broken rule, one line each (empty list: the workflow is hardened)."""
    problems = []
    top = doc.get("permissions")
    if top is None:
        problems.append("no top-level permissions")
    elif top not in ({}, "read-all") and not (
        isinstance(top, dict) and all(v in ("read", "none") for v in top.values())
    ):
        problems.append(f"top-level permissions are not read-only: {top}")
    on = triggers(doc)
    if "pull_request_target" in on:
        problems.append("pull_request_target runs PR code with secrets")
    for job_id, job in doc["jobs"].items():
        if "permissions" not in job:
            problems.append(f"job {job_id}: no permissions of its own")
        if "concurrency" not in doc and "concurrency" not in job:
            problems.append(f"job {job_id}: no concurrency group")
        job_text = yaml.safe_dump(job)
        if on & PR_TRIGGERS and "secrets." in job_text and NOT_ON_PR not in str(job.get("if", "")):
            problems.append(f"job {job_id}: uses secrets and can run on a pull request")
        if (
            "workflow_run" in on
            and "workflow_run" not in str(job.get("if", ""))
            and "event_name" not in str(job.get("if", ""))
        ):
            problems.append(f"job {job_id}: runs on workflow_run without checking the run it follows")
    for job_id, step in steps(doc):
        name = step.get("name") or step.get("uses") or "a step"
        for key in ("run",):
            if key in step and "${{" in step[key]:
                problems.append(f"job {job_id}, {name}: ${{{{ }}}} in run: (pass it through env:)")
        script = (step.get("with") or {}).get("script", "")
        if "${{" in str(script):
            problems.append(f"job {job_id}, {name}: ${{{{ }}}} in a github-script script")
        uses = step.get("uses", "")
        if (
            uses.startswith("actions/checkout@")
            and (step.get("with") or {}).get("persist-credentials") is not False
        ):
            problems.append(f"job {job_id}, {name}: checkout without persist-credentials: false")
    for line in text.splitlines():
        if re.match(r"^\s*(-\s+)?uses:", line) and not PINNED.match(line):
            problems.append(f"not pinned to a commit SHA with a version comment: {line.strip()}")
    for key, value in _env_items(doc):
        if key in MLFLOW_SECRETS and value != f"${{{{ secrets.{key} }}}}":
            problems.append(f"{key} must come from secrets.{key}, got {value!r}")
    return problems


def _env_items(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, dict):
                yield from value.items()
            else:
                yield from _env_items(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_items(item)


def test_the_four_workflows_exist():
    assert [p.name for p in WORKFLOWS] == ["cd.yml", "ci.yml", "pr-comment.yml", "retrain.yml", "sweep.yml"]


def test_workflows_validate_against_the_github_workflow_schema():
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_offline_reports_nothing():
    result = subprocess.run(
        [
            str(BIN / "zizmor"),
            "--offline",
            "--format",
            "json",
            "--no-progress",
            str(REPO / ".github" / "workflows"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)[:4000]
    assert result.returncode == 0, result.stderr


def test_only_the_workflow_run_triggers_carry_a_justified_zizmor_ignore():
    for path in WORKFLOWS:
        ignores = [line for line in path.read_text().splitlines() if "zizmor: ignore" in line]
        if "workflow_run" in triggers(load(path)):
            assert len(ignores) == 1, path.name
            line = ignores[0]
            assert line.strip().startswith("workflow_run: # zizmor: ignore[dangerous-triggers] -- "), line
            assert len(line.split(" -- ", 1)[1]) > 40, f"{path.name}: say why the trigger is safe"
        else:
            assert ignores == [], path.name


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_hardened(path):
    assert hardening_problems(load(path), path.read_text(encoding="utf-8")) == []


def test_the_hardening_check_catches_each_broken_rule():
    bad = """
name: bad
on: [pull_request, pull_request_target]
permissions: write-all
jobs:
  build:
    runs-on: ubuntu-24.04
    env:
      MLFLOW_TRACKING_PASSWORD: hunter2
    steps:
      - uses: actions/checkout@v5
      - uses: actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065
      - run: echo "${{ github.event.pull_request.title }}"
      - uses: actions/github-script@ed597411d8f924073f98dfc5c65a23a2325f34cd # v8.0.0
        with:
          script: console.log("${{ github.head_ref }}", "${{ secrets.X }}")
"""
    doc = yaml.safe_load(bad)
    doc["on"] = doc.pop(True)
    problems = hardening_problems(doc, bad)
    expected = [
        "top-level permissions are not read-only: write-all",
        "pull_request_target runs PR code with secrets",
        "job build: no permissions of its own",
        "job build: no concurrency group",
        "job build: uses secrets and can run on a pull request",
        "job build, a step: ${{ }} in run: (pass it through env:)",
        "job build, actions/github-script@ed597411d8f924073f98dfc5c65a23a2325f34cd: "
        "${{ }} in a github-script script",
        "job build, actions/checkout@v5: checkout without persist-credentials: false",
        "not pinned to a commit SHA with a version comment: - uses: actions/checkout@v5",
        "not pinned to a commit SHA with a version comment: - uses: "
        "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065",
        "MLFLOW_TRACKING_PASSWORD must come from secrets.MLFLOW_TRACKING_PASSWORD, got 'hunter2'",
    ]
    assert sorted(problems) == sorted(expected)


def test_each_action_is_pinned_to_one_sha_everywhere():
    seen: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            match = PINNED.match(line)
            if match:
                action = match.group(1).split("/")[0] + "/" + match.group(1).split("/")[1]
                seen.setdefault(action, set()).add(line.split("@", 1)[1].strip())
    assert seen and all(len(v) == 1 for v in seen.values()), seen


def test_pr_comment_never_checks_out_the_pr_and_writes_only_comments():
    doc = load(REPO / ".github" / "workflows" / "pr-comment.yml")
    assert triggers(doc) == {"workflow_run"}
    job = doc["jobs"]["comment"]
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    checkouts = [s for _, s in steps(doc) if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts and all("ref" not in (s.get("with") or {}) for s in checkouts)
    assert "secrets." not in (REPO / ".github" / "workflows" / "pr-comment.yml").read_text()


def test_cd_deploys_only_green_main_runs_from_the_production_environment():
    doc = load(REPO / ".github" / "workflows" / "cd.yml")
    job = doc["jobs"]["deploy"]
    assert job["environment"]["name"] == "production"
    condition = " ".join(job["if"].split())
    for needed in (
        "github.event.workflow_run.conclusion == 'success'",
        "github.event.workflow_run.event != 'pull_request'",
        "github.event.workflow_run.head_branch == 'main'",
    ):
        assert needed in condition
    hf = [s for _, s in steps(doc) if "HF_TOKEN" in (s.get("env") or {})]
    assert [s["run"] for s in hf] == ['make deploy | tee -a "$GITHUB_STEP_SUMMARY"']


def ci_yml_make_targets() -> list[str]:
    targets = []
    for _, step in steps(load(REPO / ".github" / "workflows" / "ci.yml")):
        for target in re.findall(r"^make ([\w-]+)", step.get("run", ""), flags=re.M):
            if target not in targets:
                targets.append(target)
    return targets


def make_ci_targets() -> list[str]:
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^ci:.*\n((?:\t.*\n)+)", text, flags=re.M)
    assert recipe, "Makefile has no ci target"
    return re.findall(r"\$\(MAKE\) ([\w-]+)", recipe.group(1))


def test_make_ci_runs_the_targets_ci_yml_runs_in_the_same_order():
    assert ci_yml_make_targets() == ["setup", "lint", "test", "ci-pipeline"]
    assert make_ci_targets() == ci_yml_make_targets()


def test_pull_requests_run_the_pipeline_with_promote_false():
    doc = load(REPO / ".github" / "workflows" / "ci.yml")
    assert doc["jobs"]["pipeline-pr"]["env"]["PROMOTE"] == "false"
    assert doc["jobs"]["pipeline-pr"]["if"] == "github.event_name == 'pull_request'"
    assert doc["jobs"]["pipeline-main"]["needs"] == "check"
