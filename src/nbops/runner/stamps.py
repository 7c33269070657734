"""Stamps: a step is done when its stamp holds the plan's key *and* its products are still the
bytes it produced: an edited or deleted product (a notebook run by hand, a person) reruns it and
what follows. Products that name a run or a model version must also be in the store."""

from __future__ import annotations

import hashlib
import time
from functools import partial
from pathlib import Path

from nbops.layout import METRICS_FILE, MODEL_FILE, STAMP_FILE
from nbops.products import read_json, write_json


def product_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file a step left in its folder (its stamp aside)."""
    hashes = {}
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.name != STAMP_FILE and not file.name.endswith(".tmp"):
            digest = hashlib.sha256()
            with open(file, "rb") as fh:
                for block in iter(partial(fh.read, 1 << 20), b""):
                    digest.update(block)
            hashes[file.relative_to(folder).as_posix()] = digest.hexdigest()
    return hashes


def write_stamp(build: Path, step: str, key: str) -> None:
    """Written last, after every product: the step is done."""
    products = product_hashes(build / step)
    write_json(build / step / STAMP_FILE, {"key": key, "finished": time.time(), "products": products})


def products_changed(build: Path, step: str, stamp: dict, uri: str, root: Path | None = None) -> str | None:
    """Why the products of `step` are not the ones its stamp recorded (None when they are);
    paths shown from `root` (build/<name>/02_train/model.json) when the folder is inside it."""
    recorded = stamp.get("products")
    if recorded is None:
        return "its stamp records no products"
    now = product_hashes(build / step)
    folder = build / step
    shown = (
        folder.relative_to(root) if root and folder.is_relative_to(root) else Path(build.name, step)
    ).as_posix()
    for name, digest in recorded.items():
        if name not in now:
            return f"{shown}/{name} is missing"
        if now[name] != digest:
            return f"{shown}/{name} changed since the run that made it"
    for name in now.keys() - recorded.keys():
        return f"{shown}/{name} was not made by the run that stamped it"
    return _missing_from_store(build / step, shown, uri)


def _missing_from_store(folder: Path, shown: str, uri: str) -> str | None:
    """A product naming a run or version the store does not hold (a store made anew)."""
    from nbops.runner import store_probe

    for name, keys in ((MODEL_FILE, ("run_id", "version")), (METRICS_FILE, None)):
        try:
            product = read_json(folder / name)
        except (OSError, ValueError):
            continue
        info = product if keys else product.get("challenger", {})
        model = product.get("model_name")
        run_id, version = info.get("run_id"), info.get("version")
        if run_id and store_probe.has_run(uri, run_id) is False:
            return f"{shown}/{name} names run {run_id}, which the tracking store does not have"
        if model and version and store_probe.has_version(uri, model, version) is False:
            return f"{shown}/{name} names {model} v{version}, which the tracking store does not have"
    return None


def tracking_uri_for_key(root: Path) -> str:
    import os

    from nbops.ml.tracking import default_tracking_uri

    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
