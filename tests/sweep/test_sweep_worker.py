"""A local sweep worker keeps serving when a point raises what run_point does not expect."""

import io

from nbops.sweep import worker


def test_an_unexpected_error_fails_its_point_only_with_the_traceback_in_its_log(monkeypatch):
    def boom(spec):
        raise OSError("No space left on device\nsecond line")

    monkeypatch.setattr(worker, "run_point", boom)
    log = io.StringIO()
    out = worker._run({"build": "/nowhere"}, log)
    assert out == {"status": "failed", "reason": "OSError: No space left on device"}
    assert "Traceback" in log.getvalue() and "in boom" in log.getvalue()
    monkeypatch.setattr(worker, "run_point", lambda spec: {"status": "ok"})
    assert worker._run({}, log) == {"status": "ok"}
