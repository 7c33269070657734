"""The runner's scheduler, with stand-in steps (no kernels): what starts when, what renders."""

import threading
from types import SimpleNamespace

import pytest

from nbops.exceptions import NbopsError, StepError
from nbops.runner import schedule as scheduler
from nbops.runner.plan import STEPS, RunResult, check_step_names
from nbops.runner.progress import Progress

TRAIN, EVALUATE = (next(s for s in STEPS if s.name == n) for n in ("02_train", "03_evaluate"))


def schedule(tmp_path, steps, execute, render):
    result = RunResult()
    plan = SimpleNamespace(build=tmp_path, reports=tmp_path)
    scheduler.Scheduler(plan, steps, result, 2, Progress(), {}, execute=execute, render=render).run()
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


def test_the_ticker_reports_only_cells_that_have_run_for_the_interval():
    progress = Progress(every_s=10)
    progress.cells = {"02_train": (16, 19, 100.0), "01_eda": (3, 12, 95.0)}
    # at t=104 the train cell has run 4 s: not worth a line; EDA's has run 9 s
    assert progress.lines(now=104.0) == []
    assert progress.lines(now=105.0) == ["… 01_eda        cell 4/12 (10s in it)"]
    assert progress.lines(now=111.0) == [
        "… 02_train      cell 17/19 (11s in it)",
        "… 01_eda        cell 4/12 (16s in it)",
    ]


def test_an_unknown_step_name_is_refused_with_the_valid_ones():
    with pytest.raises(
        NbopsError, match=r"--only: unknown step 'bogus' \(steps: 01_eda, 02_train, 03_evaluate\)"
    ):
        check_step_names(["02_train", "bogus"])
    check_step_names(["02_train", "03_evaluate"])  # known names pass
    check_step_names(None)
