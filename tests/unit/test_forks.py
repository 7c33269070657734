"""A step's forked kernel (nbops.runner.forks.ForkedKernel): handed over when it lives; when it
is gone the step starts a kernel of its own, and the console says why."""

import os
import subprocess

import pytest

from nbops.runner.forks import ForkedKernel, KernelPool, PoolKernel
from nbops.runner.spares import SpareKernel
from tests.conftest import run_coroutine

GONE = "! 02_train: its forked kernel stopped before the step; it starts a kernel of its own\n"


class Supplied:
    """What KernelPool.supply hands out: a kernel whose take() gives its manager, or None."""

    def __init__(self, manager):
        self.manager = manager

    def take(self):
        return self.manager

    def cancel(self):
        pass


class Pool:
    def __init__(self, kernel):
        self.kernel = kernel

    def supply(self, step, code, cwd):
        return self.kernel


def test_a_live_forked_kernel_is_handed_over_quietly(capsys, tmp_path):
    manager = object()
    assert ForkedKernel(Pool(Supplied(manager)), "02_train", "", tmp_path).take() is manager
    assert capsys.readouterr().out == ""


def test_a_forked_kernel_that_died_says_so(capsys, tmp_path):
    assert ForkedKernel(Pool(Supplied(None)), "02_train", "", tmp_path).take() is None
    assert capsys.readouterr().out == GONE


def test_a_cancelled_step_takes_nothing_and_says_nothing(capsys, tmp_path):
    forked = ForkedKernel(Pool(Supplied(object())), "02_train", "", tmp_path)
    forked._thread.join()
    forked.cancel()
    assert forked.take() is None
    assert capsys.readouterr().out == ""


def test_a_pool_without_its_kernel_parent_forks_nothing_and_says_where_to_look(capsys, tmp_path):
    pool = KernelPool(tmp_path / ".kernels")
    assert pool._fork("02_train", "", tmp_path) is None  # never started
    assert capsys.readouterr().out == f"! the kernel parent stopped (see {tmp_path}/.kernels)\n"


class Silent:
    """A kernel manager whose kernel never answers."""

    def client(self):
        return self

    def start_channels(self):
        pass

    def stop_channels(self):
        pass

    async def wait_for_ready(self, timeout):
        raise TimeoutError(f"no reply in {timeout} s")


@pytest.mark.parametrize(
    "kernel_class, said",
    [(PoolKernel, "! a forked kernel did not answer"), (SpareKernel, "! a kernel kept warm did not answer")],
)
def test_a_kernel_that_does_not_answer_is_named_for_what_it_is(capsys, tmp_path, kernel_class, said):
    info = {"pid": 0, "token": "t", "connection_file": str(tmp_path / "k.conn.json")}
    kernel = kernel_class(info, tmp_path / "k.spare.claimed-1")
    run_coroutine(kernel._wait_ready(Silent()))  # a thread of its own: a browser test's loop may run
    assert capsys.readouterr().out == f"{said} (TimeoutError: no reply in 120 s)\n"


def test_the_kernel_parent_starts_with_a_copy_of_the_environment(monkeypatch, tmp_path):
    """Started from the pool's thread while the runner's main thread imports scikit-learn (which
    sets KMP_* variables): a child exec'ing with the live environ another thread grows fails with
    EFAULT (Bad address), so the kernel parent gets a copy of its own."""
    started = {}

    class Spy:
        def __init__(self, args, **kwargs):
            started.update(kwargs, args=args)

        def poll(self):
            return None

    monkeypatch.setattr(subprocess, "Popen", Spy)
    monkeypatch.setenv("NBOPS_TEST_MARK", "1")
    pool = KernelPool(tmp_path / ".kernels")
    pool._ensure_parent(["pass"], tmp_path)
    assert started["args"][1:3] == ["-m", "nbops.kernel_parent"]
    assert type(started.get("env")) is dict and started["env"] == dict(os.environ)
