"""The GitHub Actions workflows and Dependabot, checked offline: schema, zizmor, pins, hardening rules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
DEPENDABOT = REPO / ".github" / "dependabot.yml"
BIN = Path(sys.executable).parent
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v\d+(\.\d+){0,2}\s*$")
MLFLOW_SECRETS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN")
PR_TRIGGERS = {"pull_request", "pull_request_target"}
NOT_ON_PR = "github.event_name != 'pull_request'"

# Every action the workflows may use: the commit of its current release tag, that tag, and the
# runtime its action.yml declares (read from each action's repository). A `uses:` with any other
# SHA or version fails, so a stale pin is caught here; Dependabot proposes the next row.
ACTIONS = {
    "actions/checkout": ("3d3c42e5aac5ba805825da76410c181273ba90b1", "v7.0.1", "node24"),
    "actions/setup-python": ("5fda3b95a4ea91299a34e894583c3862153e4b97", "v7.0.0", "node24"),
    "actions/cache/restore": ("27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5", "node24"),
    "actions/cache/save": ("27d5ce7f107fe9357f9df03efb73ab90386fccae", "v5.0.5", "node24"),
    "actions/upload-artifact": ("bbbca2ddaa5d8feaa63e36b76fdaad77386f024f", "v7.0.0", "node24"),
    "actions/download-artifact": ("3e5f45b2cfb9172054b4087a40e8e0b5a5461e7c", "v8.0.1", "node24"),
    "actions/github-script": ("ed597411d8f924073f98dfc5c65a23a2325f34cd", "v8.0.0", "node24"),
    "astral-sh/setup-uv": ("20cfd1bf945f4377ade1205e4dbc17946fc9a30d", "v10.0.1", "node24"),
}
USES = re.compile(r"^\s*(?:-\s+)?uses:\s+(\S+?)@(\S+)(?:\s+#\s*(\S+))?\s*$")


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


def test_the_five_workflows_exist():
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
    # `.github`, not only the workflows: zizmor also audits dependabot.yml (cooldown, code execution)
    result = subprocess.run(
        [
            str(BIN / "zizmor"),
            "--offline",
            "--format",
            "json",
            "--no-progress",
            str(REPO / ".github"),
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
      - uses: actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97
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
        "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97",
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


def pin_problems(text: str) -> list[str]:
    """Every `uses:` line that is not an action of ACTIONS at its listed commit and version."""
    problems = []
    for line in text.splitlines():
        match = USES.match(line)
        if not match:
            continue
        action, ref, comment = match.groups()
        if action not in ACTIONS:
            problems.append(f"{action}: not in the table of known actions")
        elif (ref, comment) != ACTIONS[action][:2]:
            sha, version, _ = ACTIONS[action]
            problems.append(f"{action}@{ref} # {comment}: expected {sha} # {version}")
    return problems


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_at_its_current_release_commit(path):
    text = path.read_text(encoding="utf-8")
    assert any(USES.match(line) for line in text.splitlines()), f"{path.name} uses no action"
    assert pin_problems(text) == []


def test_the_pin_check_catches_a_stale_or_unknown_pin():
    stale = (
        "      - uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0\n"
        "      - uses: actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97 # v6.0.0\n"
        "      - uses: someone/else@3d3c42e5aac5ba805825da76410c181273ba90b1 # v1.0.0\n"
        "      - uses: actions/github-script@ed597411d8f924073f98dfc5c65a23a2325f34cd # v8.0.0\n"
    )
    assert pin_problems(stale) == [
        "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0: "
        "expected 3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
        "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97 # v6.0.0: "
        "expected 5fda3b95a4ea91299a34e894583c3862153e4b97 # v7.0.0",
        "someone/else: not in the table of known actions",
    ]


def used_actions() -> set[str]:
    return {
        match.group(1)
        for path in WORKFLOWS
        for line in path.read_text().splitlines()
        if (match := USES.match(line))
    }


def test_the_table_lists_only_actions_in_use_and_none_runs_on_node20():
    assert used_actions() == set(ACTIONS)
    assert {runtime for _, _, runtime in ACTIONS.values()} == {"node24"}
    assert ACTIONS["actions/setup-python"][1].startswith("v7."), "setup-python before v7 runs on node20"


def test_no_checkout_opts_into_fork_pull_request_code():
    # checkout v7 refuses a fork PR's code under workflow_run unless allow-unsafe-pr-checkout is set;
    # these workflows check out main or the default branch only, so the input stays unset.
    for path in WORKFLOWS:
        for job_id, step in steps(load(path)):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert "allow-unsafe-pr-checkout" not in (step.get("with") or {}), f"{path.name} {job_id}"


def dependabot() -> dict:
    return yaml.safe_load(DEPENDABOT.read_text(encoding="utf-8"))


def updates_for(ecosystem: str) -> list[dict]:
    return [u for u in dependabot()["updates"] if u["package-ecosystem"] == ecosystem]


def test_dependabot_validates_against_its_schema():
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(DEPENDABOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_updates_actions_and_pip_weekly_each_in_one_group():
    config = dependabot()
    assert config["version"] == 2
    assert sorted(u["package-ecosystem"] for u in config["updates"]) == ["github-actions", "pip"]
    for update in config["updates"]:
        name = update["package-ecosystem"]
        assert update["directory"] == "/", name
        assert update["schedule"]["interval"] == "weekly", name
        groups = update.get("groups") or {}
        assert len(groups) == 1, f"{name}: one group, so one pull request a week"
        (group,) = groups.values()
        assert group["patterns"] == ["*"], f"{name}: the group must cover every dependency"
        assert update["cooldown"]["default-days"] >= 7, name


def test_the_pip_update_finds_the_compiled_requirements_at_the_root():
    (update,) = updates_for("pip")
    folder = REPO / update["directory"].lstrip("/")
    for name in ("requirements.txt", "requirements-dev.txt"):
        lines = (folder / name).read_text().splitlines()[:2]
        source = name.replace(".txt", ".in")
        assert (folder / source).exists(), source
        # the header Dependabot reads to recompile from the .in file rather than edit one pin
        assert lines[1].strip().startswith(f"#    uv pip compile {source} -o {name}"), lines


def header(path: Path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return " ".join(lines)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_header_claim_about_pins_is_backed(path):
    text = header(path)
    assert "pinned" in text and "Dependabot" in text and ".github/dependabot.yml" in text, text
    (update,) = updates_for("github-actions")
    assert update["directory"] == "/", "github-actions updates read .github/workflows from /"
    assert pin_problems(path.read_text(encoding="utf-8")) == []


def test_the_readme_claim_about_dependabot_is_backed():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "Dependabot" in readme
    assert [u["package-ecosystem"] for u in dependabot()["updates"]] == ["github-actions", "pip"]


def test_pr_comment_never_checks_out_the_pr_and_writes_only_comments():
    doc = load(REPO / ".github" / "workflows" / "pr-comment.yml")
    assert triggers(doc) == {"workflow_run"}
    job = doc["jobs"]["comment"]
    # contents: read for the checkout of the formatter: a private repository answers "not found" without it
    assert job["permissions"] == {"actions": "read", "contents": "read", "pull-requests": "write"}
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
    # one step holds the token: the upload and the poll (a private Space answers only with it)
    assert [s["run"] for s in hf] == ['make -s deploy | tee -a "$GITHUB_STEP_SUMMARY"']
    assert hf[0]["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"


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


def test_ci_builds_and_tests_the_space_image_with_docker():
    """The container tests run in a job of their own once docker answers (they pick docker then, and
    tests/container checks they did on GitHub), and the check job leaves out exactly those: every
    test runs in one job or the other."""
    doc = load(REPO / ".github" / "workflows" / "ci.yml")
    job = doc["jobs"]["space-image"]
    assert job["permissions"] == {"contents": "read"} and job["timeout-minutes"] <= 30
    runs = [step.get("run", "") for step in job["steps"]]
    assert any(run.startswith("docker info") for run in runs), "the job checks docker answers"
    (test,) = [step for step in job["steps"] if step.get("run", "").startswith("make test")]
    assert test["run"] == "make test PYTEST_ARGS='-m container'"
    assert runs.index("make setup") < runs.index(test["run"])
    assert any("/usr/bin/chromium" in run for run in runs)
    (check,) = [s for s in doc["jobs"]["check"]["steps"] if s.get("run", "").startswith("make test")]
    assert check["run"] == "make test PYTEST_ARGS='-m \"not container\"'"
