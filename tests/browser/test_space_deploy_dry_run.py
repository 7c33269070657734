"""`make deploy --dry-run` on `make space`'s folder: exactly the files the upload would send and
its commit message, with no token and no Hugging Face request."""

from __future__ import annotations

import subprocess

import pytest

from tests.browser.conftest import REPO, base_env, copy_space

pytestmark = pytest.mark.browser


def test_deploy_dry_run_lists_the_upload_and_the_commit_message(champion_project, space_dir, tmp_path):
    folder = copy_space(space_dir, tmp_path / "space")
    (folder / "src" / "nbops" / "__pycache__").mkdir()
    (folder / "src" / "nbops" / "__pycache__" / "space.cpython-311.pyc").write_bytes(b"\0")  # never uploaded
    env = {k: v for k, v in base_env(champion_project).items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HEAD_SHA="0123456789abcdef0123", HF_HUB_OFFLINE="1")  # any Hub request would fail
    done = subprocess.run(
        ["make", "-s", "-C", str(REPO), "deploy", "--dry-run", "HF_SPACE_ID=owner/space",
         f"PARAMS={champion_project / 'params' / 'smoke.yaml'}", f"SPACE_DIR={folder}"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("dry run: would upload"))
    listed = [line.strip() for line in lines[start + 1 :] if line.startswith("  ")]
    expected = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert listed == expected
    assert {"Dockerfile", "README.md", ".nbops-space", "champion/model_card.json", "requirements.txt"} <= set(
        listed
    )
    assert f"would upload {len(expected)} files from {folder} to Space owner/space:" in lines[start]
    assert "commit message: Deploy drug-classifier v1 (champion) from 0123456789ab" in lines
    assert "deployed" not in done.stdout and not done.stderr.strip()
