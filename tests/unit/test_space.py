"""The Space folder's parts: exact pins, Dockerfile, README front matter, local serve command."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from nbops.serve import space
from tests.conftest import REPO

CARD = {
    "name": "drug-classifier",
    "version": "7",
    "trained_at": "2026-11-22 04:17 UTC",
    "git_commit": "abc123def4567890",
    "metrics": {"accuracy": 0.95, "macro_f1": 0.9},
}


def test_slim_requirements_are_the_runtime_closure_pinned_from_the_lock():
    lock = space.read_lock(REPO / "requirements.txt")
    pins = space.runtime_requirements(lock)
    names = {p.split("==")[0] for p in pins}
    assert {"voila", "ipywidgets", "ipykernel", "scikit-learn", "skops", "pandera", "jupyter-server"} <= names
    assert "mlflow" not in names and "pyarrow" not in names  # the Space reads skops, not MLflow
    for pin in pins:
        name, version = pin.split("==")
        assert lock[name] == version


def test_a_runtime_package_missing_from_the_lock_is_named():
    with pytest.raises(space.SpaceError, match=r"'voila' is needed by the Space but not pinned"):
        space.runtime_requirements({}, packages=("voila",))


def test_dockerfile_runs_voila_as_a_non_root_user_on_7860():
    text = space.dockerfile()
    env, cmd = space.parse_dockerfile(text)
    assert "USER user" in text and "useradd --create-home --uid 1000 user" in text
    assert cmd == [
        "voila",
        "dashboard.ipynb",
        "--Voila.config_file_paths=.",
        "--Voila.ip=0.0.0.0",
        "--port=7860",
        "--no-browser",
    ]
    assert env["NBOPS_MODEL_DIR"] == "champion" and env["PYTHONPATH"] == "src"
    assert text.index("USER user") < text.index("RUN pip install")


def test_serve_runs_the_dockerfile_cmd_rebound_to_host_and_port(tmp_path):
    (tmp_path / "Dockerfile").write_text(space.dockerfile())
    cmd, env = space.local_command(tmp_path, "127.0.0.1", 7999)
    assert cmd[1:] == [
        "dashboard.ipynb",
        "--Voila.config_file_paths=.",
        "--Voila.ip=127.0.0.1",
        "--port=7999",
        "--no-browser",
    ]
    assert cmd[0].endswith("voila")
    assert env == {"NBOPS_MODEL_DIR": "champion", "PYTHONPATH": "src"}  # not HOME/PATH of the image


def test_serve_refuses_a_folder_without_dockerfile_or_exec_cmd(tmp_path):
    with pytest.raises(space.SpaceError, match=r"no Dockerfile; build the folder with `make space`"):
        space.local_command(tmp_path, "127.0.0.1", 7860)
    (tmp_path / "Dockerfile").write_text("FROM x\nCMD voila dashboard.ipynb\n")
    with pytest.raises(space.SpaceError, match=r"CMD must be in exec form"):
        space.local_command(tmp_path, "127.0.0.1", 7860)


def test_space_readme_front_matter():
    text = space.space_readme(CARD, "mit")
    front = yaml.safe_load(text.split("---")[1])
    assert front["sdk"] == "docker" and front["app_port"] == 7860 and front["license"] == "mit"
    assert front["title"] == "drug-classifier dashboard" and front["emoji"]
    assert front["short_description"] == "Predictions from the champion drug-classifier v7"
    long = yaml.safe_load(space.space_readme({**CARD, "name": "x" * 80}, "mit").split("---")[1])
    assert len(long["short_description"]) == 60 and long["short_description"].endswith("…")
    assert "accuracy 0.950" in text and "abc123def456" in text


def test_build_refuses_to_replace_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(space.SpaceError, match=r"exists and was not made by `make space`"):
        space.build_space(REPO, REPO / "params" / "smoke.yaml", out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_build_without_champion_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    out = tmp_path / "space"
    with pytest.raises(space.NbopsError, match=r"No champion model yet for 'drug-classifier'.*make pipeline"):
        space.build_space(REPO, REPO / "params" / "smoke.yaml", out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["store"]


def test_cli_prints_one_line_per_problem(tmp_path, capsys):
    assert space.main(["serve", str(tmp_path)]) == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: {tmp_path}: no Dockerfile; build the folder with `make space`"
    )


def test_voila_config_hides_tracebacks_pools_culls_times_out_and_allows_hf_framing():
    conf = json.loads((REPO / "deploy" / "voila" / "voila.json").read_text())
    vc = conf["VoilaConfiguration"]
    assert vc["show_tracebacks"] is False and vc["preheat_kernel"] is True and vc["default_pool_size"] >= 1
    assert vc["file_allowlist"] == [] and vc["file_denylist"] == [".*"]
    assert conf["MappingKernelManager"]["cull_idle_timeout"] > 0 and conf["VoilaExecutor"]["timeout"] > 0
    csp = conf["Voila"]["tornado_settings"]["headers"]["Content-Security-Policy"]
    assert csp == "frame-ancestors 'self' https://huggingface.co https://*.hf.space"


# ------------------------------------------------------------------ the same champion, the same folder


class Later(space.datetime):
    """A clock an hour later at every call: a build that stamps the time differs each time."""

    calls = 0

    @classmethod
    def now(cls, tz=None):
        cls.calls += 1
        return space.datetime(2026, 11, 30, 6, 0, tzinfo=tz) + timedelta(hours=cls.calls)


@pytest.fixture
def exported_champion(monkeypatch):
    """export_champion's registry calls replaced: champion v7, a model folder of two files."""
    from types import SimpleNamespace

    from nbops.ml import registry, tracking
    from nbops.serve import champion

    version = SimpleNamespace(name=CARD["name"], version="7", creation_timestamp=1_764_000_000_000)
    schema = {"numeric": {"Age": {"min": 15, "max": 74}}, "categorical": {"Sex": ["F", "M"]}}

    def download_artifacts(artifact_uri, dst_path):
        assert artifact_uri == "models:/drug-classifier/7"
        Path(dst_path).mkdir(parents=True)
        (Path(dst_path) / "MLmodel").write_text("flavors: {}\n")
        (Path(dst_path) / "model.skops").write_bytes(b"\x00weights")

    monkeypatch.setattr(tracking, "configure_tracking", lambda root: "sqlite:///unused")
    monkeypatch.setattr(registry, "load_model_dir", lambda *a: None)
    monkeypatch.setattr(champion, "check_schema", lambda *a: None)
    monkeypatch.setattr(champion, "registry_champion_info", lambda name: (version, schema, dict(CARD)))
    fake_mlflow = SimpleNamespace(artifacts=SimpleNamespace(download_artifacts=download_artifacts))
    monkeypatch.setattr(champion, "_mlflow", lambda: fake_mlflow)
    monkeypatch.setattr(space, "datetime", Later)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_two_builds_of_one_champion_are_byte_identical_and_say_so_in_the_marker(tmp_path, exported_champion):
    first = space.build_space(REPO, REPO / "params" / "smoke.yaml", tmp_path / "a")
    space.build_space(REPO, REPO / "params" / "smoke.yaml", tmp_path / "b")
    a, b = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "b")
    assert a == b  # an export time in the card or README would make each CD run a Space commit
    card = json.loads(a["champion/model_card.json"])
    assert "exported_at" not in card and first == card
    assert card["registered_at"] == "2025-11-24 16:00 UTC"  # changes only with the champion
    marker = json.loads(a[space.MARKER])
    assert marker == {
        "model": "models:/drug-classifier/7",
        "content_hash": space.content_hash(tmp_path / "a"),
    }


def test_content_hash_follows_the_uploaded_bytes_only(tmp_path):
    folder = tmp_path / "space"
    (folder / "src").mkdir(parents=True)
    (folder / "README.md").write_text("a")
    (folder / "src" / "m.py").write_text("x = 1\n")
    before = space.content_hash(folder)
    (folder / space.MARKER).write_text('{"content_hash": "whatever"}')  # the hash's own file
    (folder / "src" / "__pycache__").mkdir()
    (folder / "src" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\x00")  # never uploaded
    (folder / "README.md").touch()  # a newer mtime, the same bytes
    assert space.content_hash(folder) == before
    (folder / "src" / "m.py").write_text("x = 2\n")
    assert space.content_hash(folder) != before
    (folder / "src" / "m.py").write_text("x = 1\n")
    (folder / "src" / "m.py").rename(folder / "src" / "n.py")  # same bytes, another path
    assert space.content_hash(folder) != before
