"""The runner's scheduler, with stand-in steps (no kernels): what starts when, what renders."""

import threading
from types import SimpleNamespace

from nbops import runner
from nbops.exceptions import StepError

TRAIN, EVALUATE = (next(s for s in runner.STEPS if s.name == n) for n in ("02_train", "03_evaluate"))


def schedule(tmp_path, steps, execute, render):
    result = runner.RunResult()
    plan = SimpleNamespace(build=tmp_path, reports=tmp_path)
    runner._schedule(plan, steps, result, 2, runner.Progress(), {}, execute=execute, render=render)
    return result


def test_a_step_starts_before_the_report_of_the_step_it_waited_for_renders(tmp_path):
    evaluate_started = threading.Event()
    started_when_train_rendered = []

    def execute(plan, step, progress, warm):
        if step is EVALUATE:
            evaluate_started.set()

    def render(build, reports, name):
        if name == TRAIN.name:  # rendering takes ~1 s: evaluate must not be waiting on it
            started_when_train_rendered.append(evaluate_started.wait(timeout=2))

    result = schedule(tmp_path, [TRAIN, EVALUATE], execute, render)
    assert started_when_train_rendered == [True]
    assert result.ran == ["02_train", "03_evaluate"] and result.ok


def test_a_failed_step_is_rendered_and_what_needs_it_is_not_run(tmp_path):
    rendered, executed = [], []

    def execute(plan, step, progress, warm):
        executed.append(step.name)
        raise StepError(step.name, 3, "ValueError", "bad")

    result = schedule(tmp_path, [TRAIN, EVALUATE], execute, lambda b, r, name: rendered.append(name))
    assert executed == ["02_train"] and rendered == ["02_train"]
    assert result.not_run == ["03_evaluate"] and result.failure.step == "02_train"
