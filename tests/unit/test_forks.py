"""A step's forked kernel (nbops.runner.forks.ForkedKernel): handed over when it lives; when it
is gone the step starts a kernel of its own, and the console says why."""

from nbops.runner.forks import ForkedKernel, KernelPool

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
    assert (
        capsys.readouterr().out
        == f"! the kernel parent stopped (see {tmp_path}/.kernels/kernels.{pool.token}.log)\n"
    )
