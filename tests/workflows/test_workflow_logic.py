"""What the workflows do when they run, checked offline: the `if:` expressions and
concurrency groups evaluated against simulated event payloads, the registry cache keys against a
model of the Actions cache's key matching, and the `run:` scripts that decide on their own."""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = REPO / ".github" / "workflows"
REGISTRY_GROUP = "mlflow-registry"
# the conclusions GitHub gives a completed workflow run (None: not set)
CONCLUSIONS = [
    "success",
    "failure",
    "cancelled",
    "skipped",
    "timed_out",
    "action_required",
    "startup_failure",
    "neutral",
    "stale",
    None,
]


# ------------------------------------------------------------------ GitHub expressions
# The subset of https://docs.github.com/actions/learn-github-actions/expressions these
# workflows use: literals, property access, ! && || == != < <= > >=, and a few functions.
# Loose equality as GitHub does it: strings case-insensitively; different types as numbers.

TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|<=|>=|&&|\|\||[!<>().,\[\]*])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
)
STATUS_FUNCTIONS = ("success", "failure", "cancelled", "always")


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        match = TOKEN.match(text, pos)
        assert match and match.end() > pos, f"cannot read {text[pos:]!r} in {text!r}"
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def to_number(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip() or 0)
        except ValueError:
            return math.nan
    return math.nan


def loose_equal(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    if type(a) is type(b) and not isinstance(a, dict | list):
        return a == b
    x, y = to_number(a), to_number(b)
    return not (math.isnan(x) or math.isnan(y)) and x == y


def truthy(value) -> bool:
    if value is None or value is False or value == "":
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return not (value == 0 or math.isnan(value))
    return True


def as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Expression:
    """One expression, evaluated against a context {"github": ..., "vars": ..., ...}; `status`
    is what success()/failure()/cancelled() see (the dependencies' or earlier steps' outcome)."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)

    def evaluate(self, context: dict, status: str = "success"):
        self.context, self.status, self.pos = context, status, 0
        value = self._or()
        assert self.pos == len(self.tokens), f"unread tokens in {self.text!r}: {self.tokens[self.pos :]}"
        return value

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def _take(self, op=None):
        token = self._peek()
        assert op is None or token[1] == op, f"expected {op!r} at {token} in {self.text!r}"
        self.pos += 1
        return token

    def _or(self):
        value = self._and()
        while self._peek()[1] == "||":
            self._take()
            right = self._and()
            value = value if truthy(value) else right
        return value

    def _and(self):
        value = self._equality()
        while self._peek()[1] == "&&":
            self._take()
            right = self._equality()
            value = right if truthy(value) else value
        return value

    def _equality(self):
        value = self._comparison()
        while self._peek()[1] in ("==", "!="):
            op = self._take()[1]
            equal = loose_equal(value, self._comparison())
            value = equal if op == "==" else not equal
        return value

    def _comparison(self):
        value = self._unary()
        while self._peek()[1] in ("<", "<=", ">", ">="):
            op = self._take()[1]
            x, y = to_number(value), to_number(self._unary())
            value = {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
        return value

    def _unary(self):
        if self._peek()[1] == "!":
            self._take()
            return not truthy(self._unary())
        return self._postfix(self._primary())

    def _primary(self):
        kind, text = self._take()
        if kind == "num":
            return float(text)
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if text == "(":
            value = self._or()
            self._take(")")
            return value
        assert kind == "name", f"unexpected {text!r} in {self.text!r}"
        if text in ("true", "false"):
            return text == "true"
        if text == "null":
            return None
        if self._peek()[1] == "(":
            self._take("(")
            args = []
            while self._peek()[1] != ")":
                args.append(self._or())
                if self._peek()[1] == ",":
                    self._take(",")
            self._take(")")
            return self._call(text, args)
        return self.context.get(text)

    def _postfix(self, value):
        while self._peek()[1] in (".", "["):
            if self._take()[1] == ".":
                key = self._take()[1]
            else:
                key = self._or()
                self._take("]")
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def _call(self, name: str, args: list):
        if name in STATUS_FUNCTIONS:
            return {
                "success": self.status == "success",
                "failure": self.status == "failure",
                "cancelled": self.status == "cancelled",
                "always": True,
            }[name]
        if name == "format":
            return re.sub(r"\{(\d+)\}", lambda m: as_text(args[1 + int(m.group(1))]), args[0])
        if name == "contains":
            haystack, needle = args
            if isinstance(haystack, list):
                return any(loose_equal(item, needle) for item in haystack)
            return as_text(needle).casefold() in as_text(haystack).casefold()
        if name == "startsWith":
            return as_text(args[0]).casefold().startswith(as_text(args[1]).casefold())
        if name == "endsWith":
            return as_text(args[0]).casefold().endswith(as_text(args[1]).casefold())
        raise AssertionError(f"function {name}() is not modelled here")


def condition(text, context: dict, status: str = "success") -> bool:
    """A job's or step's `if:` as the runner decides it: without a status function, success() && (...)."""
    if isinstance(text, bool):
        return text
    text = str(text).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    if not any(re.search(rf"\b{name}\(", text) for name in STATUS_FUNCTIONS):
        text = f"success() && ({text})"
    return truthy(Expression(text).evaluate(context, status))


def render(value, context: dict) -> str:
    """A string with ${{ }} templates, as the runner renders it (a key, a group name, an env value)."""
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: as_text(Expression(m.group(1)).evaluate(context)), str(value))


def test_the_expression_model_follows_github_rules():
    ctx = {"github": {"event": {"x": "Main"}}, "vars": {}, "inputs": {"promote": True}}
    assert condition("github.event.x == 'main'", ctx)  # strings compare case-insensitively
    assert condition("vars.UNSET == ''", ctx) and not condition("vars.UNSET != ''", ctx)
    assert not condition("github.event.missing.deeper == 'a'", ctx)
    assert render("${{ inputs.promote && 'a' || format('b-{0}', github.event.x) }}", ctx) == "a"
    assert render("${{ inputs.nothing && 'a' || format('b-{0}', github.event.x) }}", ctx) == "b-Main"
    assert not condition("true", ctx, status="failure")  # implicit success()
    assert condition("!cancelled() && true", ctx, status="failure")
    assert not condition("!cancelled()", ctx, status="cancelled")


# ------------------------------------------------------------------ the workflows as data


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def all_workflows() -> dict[str, dict]:
    return {path.name: load(path.name) for path in sorted(WORKFLOWS.glob("*.yml"))}


def github_context(**github) -> dict:
    base = {
        "repository": "owner/nbops",
        "ref": "refs/heads/main",
        "sha": "mainhead",
        "run_id": 4200,
        "run_attempt": 1,
        "event_name": "push",
        "event": {},
    }
    base.update(github)
    return base


def workflow_run(name: str, **fields) -> dict:
    """The github context of a job that runs on `workflow_run` after the run `fields` describe."""
    run = {
        "name": name,
        "conclusion": "success",
        "event": "push",
        "head_branch": "main",
        "head_sha": "testedsha",
        "head_repository": {"full_name": "owner/nbops"},
        "id": 77,
    }
    run.update(fields)
    return github_context(event_name="workflow_run", event={"workflow_run": run})


def job_env(doc: dict, job: dict, context: dict) -> dict:
    """env as a step sees it: the workflow's, then the job's, each value rendered."""
    env: dict[str, str] = {}
    for layer in (doc.get("env") or {}, job.get("env") or {}):
        for key, value in layer.items():
            env[key] = render(value, {**context, "env": env})
    return env


def step_env(doc: dict, job: dict, step: dict, context: dict) -> dict:
    env = job_env(doc, job, context)
    for key, value in (step.get("env") or {}).items():
        env[key] = render(value, {**context, "env": env})
    return env


def run_script(script: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """A `run:` body as the runner runs it with `shell: bash` (bash -e -o pipefail)."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def group_of(doc: dict, job: dict, context: dict) -> tuple[str | None, object]:
    concurrency = job.get("concurrency")
    if concurrency is None:
        return None, None
    if isinstance(concurrency, str):
        return render(concurrency, context), False
    return render(concurrency["group"], context), concurrency.get("cancel-in-progress", False)


# ------------------------------------------------------------------ item 2: CD off without a Space


def deploy_runs(context: dict, space_id: str = "owner/space", rollback_result: str = "skipped") -> bool:
    job = load("cd.yml")["jobs"]["deploy"]
    ctx = {**context, "vars": {"HF_SPACE_ID": space_id}, "needs": {"rollback": {"result": rollback_result}}}
    return condition(job["if"], ctx)


def test_cd_is_skipped_without_hf_space_id_and_runs_with_it():
    green_ci = {"github": workflow_run("CI"), "inputs": {}}
    assert deploy_runs(green_ci, space_id="owner/space")
    assert not deploy_runs(green_ci, space_id="")
    dispatch = {"github": github_context(event_name="workflow_dispatch"), "inputs": {"rollback": False}}
    assert deploy_runs(dispatch) and not deploy_runs(dispatch, space_id="")


def test_ci_on_main_says_in_its_job_summary_that_cd_is_off(tmp_path):
    doc = load("ci.yml")
    job = doc["jobs"]["pipeline-main"]
    ctx = {"github": github_context()}
    notes = [s for s in job["steps"] if "CD is off" in s.get("run", "")]
    assert len(notes) == 1, "one step of pipeline-main says CD is off"
    (step,) = notes
    assert condition(step["if"], {**ctx, "vars": {}}) and condition(
        step["if"], {**ctx, "vars": {"HF_SPACE_ID": ""}}
    )
    assert not condition(step["if"], {**ctx, "vars": {"HF_SPACE_ID": "owner/space"}})
    summary = tmp_path / "summary.md"
    result = run_script(step["run"], {"GITHUB_STEP_SUMMARY": str(summary)}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert summary.read_text().startswith("CD is off: set the repository variable HF_SPACE_ID")


# ------------------------------------------------------------------ item 4: one registry group

# Every job that writes the registry (an alias, a version, or the cached snapshot): workflow,
# job, and the context in which it writes.
WRITERS = {
    ("ci.yml", "pipeline-main"): {"github": github_context()},
    ("retrain.yml", "drift"): {"github": github_context(event_name="schedule")},
    ("cd.yml", "rollback"): {
        "github": github_context(event_name="workflow_dispatch"),
        "inputs": {"rollback": True},
    },
    ("sweep.yml", "aggregate"): {
        "github": github_context(event_name="workflow_dispatch"),
        "inputs": {"promote": True, "sweep": "params/sweeps/trees.yaml"},
        "needs": {"plan": {"result": "success"}, "shard": {"result": "success"}},
    },
}


def test_every_registry_writer_shares_one_group_and_never_cancels_it():
    workflows = all_workflows()
    for (name, job_id), ctx in WRITERS.items():
        doc = workflows[name]
        job = doc["jobs"][job_id]
        assert condition(job.get("if", "true"), {"needs": {}, "vars": {}, **ctx}), f"{name} {job_id} runs"
        group, cancel = group_of(doc, job, ctx)
        assert group == REGISTRY_GROUP, f"{name} {job_id}: group {group!r}"
        assert cancel is False, f"{name} {job_id}: cancel-in-progress on the registry group"
        assert "environment" not in job, f"{name} {job_id} would hold the group while waiting for a reviewer"
    # and the workflow-level groups of these workflows are not the registry group either
    for name in {name for name, _ in WRITERS}:
        top = workflows[name].get("concurrency") or {}
        assert REGISTRY_GROUP not in str(top), name


def test_only_the_writers_hold_the_registry_group():
    contexts = [
        {"github": github_context(), "inputs": {"promote": True, "rollback": True}},
        {"github": github_context(event_name="workflow_dispatch"), "inputs": {"promote": True}},
        {"github": workflow_run("CI"), "inputs": {}},
    ]
    holders = set()
    for name, doc in all_workflows().items():
        for job_id, job in doc["jobs"].items():
            for ctx in contexts:
                if group_of(doc, job, ctx)[0] == REGISTRY_GROUP:
                    holders.add((name, job_id))
    assert holders == set(WRITERS)


def test_the_deploy_job_holds_only_deploy_production():
    doc = load("cd.yml")
    ctx = {"github": workflow_run("CI")}
    assert group_of(doc, doc["jobs"]["deploy"], ctx) == ("deploy-production", False)
    assert doc["jobs"]["deploy"]["environment"]["name"] == "production"
    # a workflow-level group would be held by the rollback job too (and the same name twice deadlocks)
    assert "concurrency" not in doc


def sweep_group(promote: bool, ref: str = "refs/heads/main", run_id: int = 4200) -> str:
    doc = load("sweep.yml")
    ctx = {"github": github_context(event_name="workflow_dispatch", ref=ref, run_id=run_id)}
    return group_of(doc, doc["jobs"]["aggregate"], {**ctx, "inputs": {"promote": promote}})[0]


def test_the_sweep_aggregate_joins_the_registry_group_only_when_it_promotes():
    assert sweep_group(True) == REGISTRY_GROUP
    for group in (sweep_group(False), sweep_group(True, ref="refs/heads/feature")):
        assert group != REGISTRY_GROUP and "4200" in group, group
    assert sweep_group(False, run_id=1) != sweep_group(False, run_id=2), "unique per run"
    # and then it passes the same decision to the sweep: it promotes exactly when it holds the group
    doc = load("sweep.yml")
    (step,) = [s for s in doc["jobs"]["aggregate"]["steps"] if "PROMOTE" in (s.get("env") or {})]
    for promote, ref in ((True, "refs/heads/main"), (False, "refs/heads/main"), (True, "refs/heads/x")):
        ctx = {"github": github_context(ref=ref), "inputs": {"promote": promote}, "secrets": {}}
        env = step_env(doc, doc["jobs"]["aggregate"], step, ctx)
        assert (env["PROMOTE"] == "true") == (sweep_group(promote, ref) == REGISTRY_GROUP)


# ------------------------------------------------------------------ item 5 and 12: cache keys


class Cache:
    """The Actions cache's key matching (docs: "Matching a cache key"): the key exactly, then
    the newest entry the key is a prefix of, then the same for each restore key in order."""

    def __init__(self):
        self.entries: list[str] = []  # oldest first

    def save(self, key: str) -> None:
        assert key not in self.entries, f"a second save of {key!r} fails (the key exists)"
        self.entries.append(key)

    def restore(self, key: str, restore_keys: list[str] = ()) -> str | None:
        for wanted in (key, *restore_keys):
            if wanted in self.entries:
                return wanted
            matches = [entry for entry in self.entries if entry.startswith(wanted)]
            if matches:
                return matches[-1]
        return None


def cache_steps(kind: str):
    """(workflow, job, step) for every actions/cache/<kind> step on the registry folder `mlflow`."""
    for name, doc in all_workflows().items():
        for job_id, job in doc["jobs"].items():
            for step in job.get("steps", []):
                uses = step.get("uses", "")
                if uses.startswith(f"actions/cache/{kind}@") and step["with"]["path"] == "mlflow":
                    yield name, doc, job_id, job, step


def cache_key(doc, job, step, run_id: int, attempt: int, field: str = "key") -> str:
    ctx = {"github": github_context(run_id=run_id, run_attempt=attempt), "inputs": {}, "vars": {}}
    ctx["env"] = job_env(doc, job, ctx)
    return render(step["with"][field], ctx)


RUNS = [(7, 1), (7, 2), (7, 10), (7, 11), (70, 1), (71, 1), (700, 3)]


def test_no_saved_registry_key_is_a_prefix_of_another():
    saves = list(cache_steps("save"))
    assert {(name, job_id) for name, _, job_id, _, _ in saves} == {
        ("ci.yml", "pipeline-main"),
        ("retrain.yml", "drift"),
        ("cd.yml", "rollback"),
    }
    # run ids are unique across a repository's workflows: each workflow gets its own here
    keys = {
        (run + 1000 * i, attempt): cache_key(doc, job, step, run + 1000 * i, attempt)
        for i, (_, doc, _, job, step) in enumerate(saves)
        for run, attempt in RUNS
    }
    assert len(set(keys.values())) == len(keys), "one key per run and attempt"
    for a, key_a in keys.items():
        for b, key_b in keys.items():
            assert a == b or not key_b.startswith(key_a), f"{key_a} is a prefix of {key_b}"


@pytest.mark.parametrize(
    "where",
    [
        f"{name} {job_id}"
        for name, _, job_id, _, step in cache_steps("restore")
        if not step["with"].get("lookup-only")
    ],
)
def test_a_restore_gets_the_newest_snapshot_even_on_a_re_run(where):
    (name, doc, _, job, step), *_ = [
        s for s in cache_steps("restore") if f"{s[0]} {s[2]}" == where and not s[4]["with"].get("lookup-only")
    ]
    (_, saver_doc, _, saver_job, saver_step), *_ = cache_steps("save")
    cache = Cache()
    cache.save(cache_key(saver_doc, saver_job, saver_step, 7, 1))  # run 7 saved, then failed later on
    cache.save(cache_key(saver_doc, saver_job, saver_step, 8, 1))  # run 8 promoted: the newest
    restore_keys = cache_key(doc, job, step, 7, 2, "restore-keys").split()
    for run, attempt in ((7, 2), (9, 1), (8, 2)):  # a re-run of 7, a new run, a re-run of 8
        primary = cache_key(doc, job, step, run, attempt)
        assert not any(entry.startswith(primary) for entry in cache.entries), f"{primary} matches a saved key"
        assert cache.restore(primary, restore_keys) == cache.entries[-1], (
            f"{where}: run {run} attempt {attempt}"
        )


def test_every_registry_save_is_checked_by_an_exact_lookup():
    for name, doc, job_id, job, save in cache_steps("save"):
        after = job["steps"][job["steps"].index(save) + 1 :]
        checks = [
            s
            for s in after
            if s.get("uses", "").startswith("actions/cache/restore@")
            and s["with"].get("key") == save["with"]["key"]
            and s["with"].get("path") == save["with"]["path"]
        ]
        assert checks, f"{name} {job_id}: a failed save is only a warning: look the key up after it"
        (check,) = checks
        assert check["with"].get("lookup-only") is True and check["with"].get("fail-on-cache-miss") is True
        assert "restore-keys" not in check["with"], "the exact key only"
        assert check.get("if") == save.get("if"), "checked whenever it is saved"
        # the lookup finds the key this attempt saved, and nothing else
        cache = Cache()
        for run, attempt in RUNS:
            if (run, attempt) != (7, 1):
                cache.save(cache_key(doc, job, save, run, attempt))
        assert cache.restore(cache_key(doc, job, check, 7, 1)) is None, "a miss when the save was lost"
        cache.save(cache_key(doc, job, save, 7, 1))
        assert cache.restore(cache_key(doc, job, check, 7, 1)) == cache_key(doc, job, save, 7, 1)


def test_the_snapshot_is_saved_only_when_it_is_the_registry(tmp_path):
    # with an MLflow server (secret set) there is no mlflow/ folder, and the save check would fail
    for name, _, job_id, job, save in cache_steps("save"):
        (decide,) = [s for s in job["steps"] if s.get("id") == "registry"]
        assert job["steps"].index(decide) < job["steps"].index(save)
        assert save["if"] == "steps.registry.outputs.snapshot == 'true'", f"{name} {job_id}"
        for uri, snapshot in (("", "true"), ("https://mlflow.example.org", "false")):
            out = tmp_path / f"{name}-{job_id}-{snapshot}"
            result = run_script(decide["run"], {"MLFLOW_TRACKING_URI": uri, "GITHUB_OUTPUT": str(out)}, REPO)
            assert result.returncode == 0, result.stderr
            assert out.read_text() == f"snapshot={snapshot}\n"


# ------------------------------------------------------------------ item 6: one rollback per run


def rollback_runs(context: dict) -> bool:
    return condition(load("cd.yml")["jobs"]["rollback"]["if"], {**context, "vars": {}, "needs": {}})


def test_the_rollback_is_a_job_of_its_own_so_re_running_the_deploy_does_not_roll_back_again():
    doc = load("cd.yml")
    rollbacks = [
        job_id
        for job_id, job in doc["jobs"].items()
        for s in job["steps"]
        if "make" in s.get("run", "") and "rollback" in s["run"]
    ]
    assert rollbacks == ["rollback"], "make rollback in the rollback job only"
    assert not any(
        "make" in s.get("run", "") and "deploy" in s["run"] for s in doc["jobs"]["rollback"]["steps"]
    )
    assert doc["jobs"]["deploy"]["needs"] in ("rollback", ["rollback"])
    dispatch = github_context(event_name="workflow_dispatch")
    assert rollback_runs({"github": dispatch, "inputs": {"rollback": True}})
    assert not rollback_runs({"github": dispatch, "inputs": {"rollback": False}})
    assert not rollback_runs(
        {
            "github": github_context(event_name="workflow_dispatch", ref="refs/heads/x"),
            "inputs": {"rollback": True},
        }
    )
    assert not rollback_runs({"github": workflow_run("CI"), "inputs": {}})
    # "Re-run failed jobs" after a failed deploy: the rollback keeps its success and is not re-run
    rerun = {
        "github": github_context(event_name="workflow_dispatch", run_attempt=2),
        "inputs": {"rollback": True},
    }
    assert deploy_runs(rerun, rollback_result="success")
    # a failed rollback deploys nothing; no rollback asked: the deploy runs after the skipped job
    assert not deploy_runs(rerun, rollback_result="failure")
    assert deploy_runs({"github": dispatch, "inputs": {"rollback": False}}, rollback_result="skipped")


# ------------------------------------------------------------------ item 9: pr-comment conclusions


@pytest.mark.parametrize("conclusion", CONCLUSIONS, ids=str)
def test_pr_comment_reads_only_runs_that_upload_the_summary(conclusion):
    job = load("pr-comment.yml")["jobs"]["comment"]
    ctx = {"github": workflow_run("CI", event="pull_request", conclusion=conclusion, head_branch="feature")}
    assert condition(job["if"], ctx) == (conclusion in ("success", "failure"))
    ctx = {"github": workflow_run("CI", event="push", conclusion=conclusion)}
    assert not condition(job["if"], ctx), "never after a push"


# ------------------------------------------------------------------ item 13: CD after a Sweep


def test_cd_follows_every_workflow_that_can_promote_by_its_name():
    workflows = all_workflows()
    names = {doc["name"] for doc in workflows.values()}
    listed = workflows["cd.yml"]["on"]["workflow_run"]["workflows"]
    promoters = {workflows[name]["name"] for name, _ in WRITERS if name != "cd.yml"}
    assert set(listed) == promoters == {"CI", "Retrain", "Sweep"}
    assert set(listed) <= names, "workflow_run matches the workflows' `name:`, not file names"


@pytest.mark.parametrize(
    ("fields", "deploys"),
    [
        ({"event": "workflow_dispatch"}, True),
        ({"event": "workflow_dispatch", "head_branch": "feature"}, False),
        ({"event": "workflow_dispatch", "conclusion": "failure"}, False),
        ({"event": "workflow_dispatch", "head_repository": {"full_name": "fork/nbops"}}, False),
    ],
)
def test_a_sweep_promotion_deploys_with_the_same_guards(fields, deploys):
    assert deploy_runs({"github": workflow_run("Sweep", **fields), "inputs": {}}) is deploys


@pytest.mark.parametrize("source", ["CI", "Retrain"])
def test_cd_never_deploys_a_pull_request_a_failure_or_a_fork(source):
    assert deploy_runs({"github": workflow_run(source), "inputs": {}})
    for fields in (
        {"event": "pull_request"},
        {"conclusion": "failure"},
        {"conclusion": "cancelled"},
        {"head_branch": "feature"},
        {"head_repository": {"full_name": "fork/nbops"}},
    ):
        assert not deploy_runs({"github": workflow_run(source, **fields), "inputs": {}}), fields


# ------------------------------------------------------------------ item 10: the cache stays warm


def cron_days(field: str) -> set[int]:
    if field == "*":
        return set(range(7))
    days = set()
    for part in field.split(","):
        low, _, high = part.partition("-")
        days.update(range(int(low), int(high or low) + 1))
    return {day % 7 for day in days}


def test_retrain_reads_the_snapshot_more_often_than_the_cache_evicts_it():
    doc = load("retrain.yml")
    days = sorted(set().union(*(cron_days(c["cron"].split()[4]) for c in doc["on"]["schedule"])))
    gaps = [(b - a) % 7 or 7 for a, b in zip(days, days[1:] + days[:1], strict=True)]
    assert max(gaps) < 7, f"runs {days} leave {max(gaps)} days between reads: GitHub evicts after 7"
    text = (WORKFLOWS / "retrain.yml").read_text(encoding="utf-8")
    assert "7 days" in text and "evict" in text, "say why the schedule is what it is"
    job = doc["jobs"]["drift"]
    (restore,) = [
        s
        for s in job["steps"]
        if s.get("uses", "").startswith("actions/cache/restore@") and "restore-keys" in s["with"]
    ]
    (drift,) = [s for s in job["steps"] if "make drift" in s.get("run", "")]
    assert job["steps"].index(restore) < job["steps"].index(drift)
    assert all("--retrain" in args for args in re.findall(r'ARGS="([^"]*)"', drift["run"])), (
        "--retrain: with no champion yet, drift runs the pipeline"
    )


# ------------------------------------------------------------------ nits


def test_cd_output_through_tee_is_unbuffered_and_without_make_echo():
    for name, doc in all_workflows().items():
        for job_id, job in doc["jobs"].items():
            for step in job.get("steps", []):
                for line in step.get("run", "").splitlines():
                    if "| tee" in line and "make " in line:
                        assert re.search(r"\bmake -s ", line), f"{name} {job_id}: {line}"
                        env = step_env(
                            doc, job, step, {"github": github_context(), "secrets": {}, "vars": {}}
                        )
                        assert env.get("PYTHONUNBUFFERED") == "1", (
                            f"{name} {job_id}: Python block-buffers into a pipe"
                        )


def test_the_deploy_step_names_the_commit_ci_ran_on_and_polls_with_the_token():
    doc = load("cd.yml")
    job = doc["jobs"]["deploy"]
    (step,) = [s for s in job["steps"] if "make -s deploy" in s.get("run", "")]
    ctx = {"github": workflow_run("CI"), "secrets": {"HF_TOKEN": "hf_x"}, "vars": {}}
    env = step_env(doc, job, step, ctx)
    assert env["HEAD_SHA"] == "testedsha" and env["HF_TOKEN"] == "hf_x"
    dispatch = {"github": github_context(event_name="workflow_dispatch"), "secrets": {}, "vars": {}}
    assert step_env(doc, job, step, dispatch)["HEAD_SHA"] == "mainhead"
    (checkout,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["ref"] == step["env"]["HEAD_SHA"], "deploys the commit it names"


def data_step() -> dict:
    job = load("retrain.yml")["jobs"]["drift"]
    (step,) = [s for s in job["steps"] if "NBOPS_DATA_URL" in (s.get("env") or {})]
    return step


def test_retrain_fails_with_one_sentence_when_no_current_data_is_configured(tmp_path):
    doc = load("retrain.yml")
    job = doc["jobs"]["drift"]
    step = data_step()
    assert step["env"]["NBOPS_DATA_URL"] == "${{ secrets.NBOPS_DATA_URL }}"
    assert job["steps"].index(step) < job["steps"].index(
        next(s for s in job["steps"] if "make drift" in s.get("run", ""))
    )
    env = step_env(
        doc, job, step, {"github": github_context(event_name="schedule"), "secrets": {}, "vars": {}}
    )
    result = run_script(step["run"], {**env, "GITHUB_STEP_SUMMARY": str(tmp_path / "s.md")}, tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith(
        "::error::Retrain needs the current data: set the repository secret NBOPS_DATA_URL"
    ), result.stdout
    assert env["PARAMS"] == "params/default.yaml", "the data lands where the params make drift reads say"


def test_the_readme_says_where_retrain_takes_the_current_data_from():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## CI/CD\n", 1)[1].split("\n## ", 1)[0]
    assert "NBOPS_DATA_URL" in section and "git-ignored" in section


def test_the_sweep_header_says_what_moves_from_a_branch():
    doc = load("sweep.yml")
    shard = doc["jobs"]["shard"]
    gets_server = any("MLFLOW_TRACKING_URI" in (s.get("env") or {}) for s in shard["steps"])
    guarded = "refs/heads/main" in str(shard.get("if", ""))
    lines = (WORKFLOWS / "sweep.yml").read_text(encoding="utf-8").splitlines()
    top = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    header = " ".join(line.lstrip("# ") for line in top)
    if gets_server and not guarded:
        assert "`challenger`" in header and "any branch" in header, header
        assert "moving nothing" not in header
