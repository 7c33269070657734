# ------------------------------------------------------------------ the no-op fast path
# A rerun with nothing changed must cost next to nothing. Validating params imports pydantic
# and builds the schema (most of a no-op's 0.3 s), so a full run that left every step current
# records what its plan was made from, as bytes; a later run that finds the same bytes, the
# same stamps and its reports in place skips the plan: it parses nothing.


from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from nbops.layout import EVALUATION, INDEX_FILE, STAMP_FILE
from nbops.products import params_hash, read_json, write_json
from nbops.runner.codehash import package_hash
from nbops.runner.plan import STEPS, Plan, RunResult
from nbops.runner.progress import say
from nbops.runner.stamps import products_changed, tracking_uri_for_key

LAST_RUN = ".last-run.json"


def inputs_fingerprint(params_file: Path, root: Path, build: Path, reports: Path, record: dict) -> str:
    """Everything make_plan reads, unparsed: the params file, the notebooks, the package's
    source, the data file and which file that is, the tracking store, the folders."""
    from nbops.ml.data import file_hash

    return params_hash(
        [
            file_hash(params_file),
            [file_hash(root / s.notebook) for s in STEPS],
            package_hash(),
            file_hash(Path(record["data_path"])),
            Path(record["real_data_path"]).is_file(),
            tracking_uri_for_key(root),
            [str(root), str(build), str(reports)],
        ]
    )


def remember_run(plan: Plan) -> None:
    record = {
        "keys": plan.keys,
        "data_path": str(plan.data_path),
        "real_data_path": str(plan.root / plan.params.data.path),
        "synthetic": plan.synthetic,
        "sizes": _sizes(plan.params_file, plan.data_path),
    }
    record["fingerprint"] = inputs_fingerprint(plan.params_file, plan.root, plan.build, plan.reports, record)
    write_json(plan.build / LAST_RUN, record)


def unchanged_since_last_run(params_file: Path, root: Path, build: Path, reports: Path) -> RunResult | None:
    """The no-op result when nothing make_plan reads has changed since the last full run and
    every step's stamp is still the one it left; None otherwise (then the full plan decides)."""
    try:
        record = read_json(build / LAST_RUN)
        # sizes before hashes: a params file that became a FIFO, /dev/zero or 100 GB is never
        # read here (make_plan then says what it is)
        if record["sizes"] != _sizes(params_file, Path(record["data_path"])):
            return None
        if record["fingerprint"] != inputs_fingerprint(params_file, root, build, reports, record):
            return None
        stamps = {step: read_json(build / step / STAMP_FILE) for step in record["keys"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if {step: stamp.get("key") for step, stamp in stamps.items()} != record["keys"]:
        return None
    uri = tracking_uri_for_key(root)
    if any(products_changed(build, step, stamp, uri, root) for step, stamp in stamps.items()):
        return None  # the full plan says which product and reruns from there
    if not (reports / INDEX_FILE).is_file():
        return None
    real = Path(record["real_data_path"])
    _say_data(Path(record["data_path"]), root, real.relative_to(root), record["synthetic"])
    result = RunResult(reports=reports)
    for step in record["keys"]:
        say(f"- {step:<12}  skipped (unchanged)")
        result.skipped.append(step)
    metrics = build / EVALUATION
    if metrics.exists():
        result.evaluation = read_json(metrics)
    return result


def _sizes(*files: Path) -> list[int]:
    """Byte sizes of regular files; OSError for anything else (a FIFO, a device: never hashed)."""
    import stat

    sizes = []
    for file in files:
        info = os.stat(file)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{file}: not a regular file")
        sizes.append(info.st_size)
    return sizes


def _say_data(data_path: Path, root: Path, real_path, synthetic: bool) -> None:
    """Which CSV this run reads; the synthetic table says where the real one goes."""
    if synthetic:
        say(f"data: {data_path.relative_to(root)} (SYNTHETIC: put the real CSV at {real_path} to use it)")
    else:
        say(f"data: {data_path}")


@contextmanager
def build_lock(build: Path):
    """One run at a time per build folder (build/<name>/: runs of other params files go on); a
    second run of the same one waits, saying for whom."""
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            say(f"waiting: another nbops run (pid {holder}) is using {build} …")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
