"""The executors without kernels: a LocalPool's workers serve point after point from any thread
(a search's trials share them as a grid's points do), a dead worker fails its own point only,
and a closed pool starts nothing; each point counts only the kernels handed to it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from nbops.sweep import executors, kernels


@pytest.fixture
def workers(monkeypatch):
    """executors.LocalWorker faked: every one started is listed; a spec with "die" kills its worker."""
    started = []

    class FakeWorker:
        def __init__(self, root, env, log):
            self.log, self.closed, self.points = log, False, []
            started.append(self)

        def run(self, spec_file):
            spec = json.loads(spec_file.read_text())
            time.sleep(spec.get("sleep", 0))
            if spec.get("die") or self.closed:
                return None
            self.points.append(Path(spec["build"]).name)
            return {"status": "ok", "worker": started.index(self)}

        def close(self, grace_s=30.0):
            self.closed = True
            return -9

    monkeypatch.setattr(executors, "LocalWorker", FakeWorker)
    return started


def spec(tmp_path, name, **extra) -> dict:
    return {"root": str(tmp_path), "build": str(tmp_path / "points" / name), **extra}


def test_points_run_one_after_another_share_one_worker(workers, tmp_path):
    pool = executors.LocalPool(2)
    outs = [pool.run(spec(tmp_path, f"t{n}")) for n in range(3)]
    assert outs == [{"status": "ok", "worker": 0}] * 3
    assert [w.points for w in workers] == [["t0", "t1", "t2"]]
    assert workers[0].log == tmp_path / "points" / ".workers" / "worker-0.log"
    pool.close()
    assert workers[0].closed


def test_points_from_many_threads_use_at_most_the_pools_workers(workers, tmp_path):
    pool = executors.LocalPool(2)
    outs = []
    threads = [
        threading.Thread(target=lambda n=n: outs.append(pool.run(spec(tmp_path, f"t{n}", sleep=0.05))))
        for n in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(workers) == 2 and sorted(len(w.points) for w in workers) == [3, 3]
    assert [o["status"] for o in outs] == ["ok"] * 6
    pool.close()


def test_a_dead_worker_fails_its_point_and_the_next_point_gets_a_new_one(workers, tmp_path):
    pool = executors.LocalPool(1)
    died = pool.run(spec(tmp_path, "t0", die=True))
    assert died["status"] == "failed"
    assert died["reason"].startswith("worker process died (killed by SIGKILL) while running the point")
    assert pool.run(spec(tmp_path, "t1")) == {"status": "ok", "worker": 1}
    assert workers[0].closed and [w.points for w in workers] == [[], ["t1"]]
    pool.close()


def test_a_closed_pool_fails_a_point_and_starts_no_worker(workers, tmp_path):
    pool = executors.LocalPool(1)
    pool.close()
    assert pool.run(spec(tmp_path, "t0")) == {
        "status": "failed",
        "reason": "the sweep stopped before this point ran",
    }
    assert workers == []


def test_a_point_counts_only_the_kernels_handed_to_it():
    class Kernel:
        def __init__(self, waited):
            self.waited = waited

    class Pool:  # one worker's KernelPool, shared by two points running at once on a Dask worker
        def supply(self, step, code, cwd):
            return Kernel(1.0 if step == "02_train" else 0.25)

    pool = Pool()
    first, second = kernels.PointKernels(pool), kernels.PointKernels(pool)
    first.supply("02_train", "", Path("."))
    second.supply("03_evaluate", "", Path("."))
    first.supply("03_evaluate", "", Path("."))
    assert first.waited() == 1.25 and second.waited() == 0.25
