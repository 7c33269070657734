"""nbops.serve.container without an engine: which engine, which base, and the exact command lines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nbops.serve import container, container_commands
from nbops.serve.container import Base, ContainerError, Containers, Engine

PODMAN = Engine("podman", ("podman", "--runtime", "runc"), {"CONTAINERS_CONF": "/c/containers.conf"})
DOCKER = Engine("docker", ("docker",))


def which_of(*present):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_docker_is_chosen_when_its_daemon_answers(tmp_path):
    engine = container.choose_engine(
        tmp_path, which=which_of("docker", "podman"), docker_ok=lambda: True, prefer=""
    )
    assert engine == DOCKER


def test_podman_with_runc_and_no_default_ulimits_when_docker_has_no_daemon(tmp_path):
    engine = container.choose_engine(
        tmp_path, which=which_of("docker", "podman", "runc"), docker_ok=lambda: False, prefer=""
    )
    assert engine.prefix == ("podman", "--runtime", "runc")
    conf = Path(engine.env["CONTAINERS_CONF"])
    assert conf == (tmp_path / "containers.conf").resolve()
    assert conf.read_text() == "[containers]\ndefault_ulimits = []\n"


def test_podman_without_runc_keeps_its_own_runtime(tmp_path):
    engine = container.choose_engine(tmp_path, which=which_of("podman"), docker_ok=lambda: False, prefer="")
    assert engine.prefix == ("podman",)


def test_no_engine_is_one_line_saying_what_to_install(tmp_path):
    with pytest.raises(ContainerError) as info:
        container.choose_engine(tmp_path, which=which_of(), docker_ok=lambda: False, prefer="")
    assert info.value.problems == [
        "no container engine: install podman (`apt-get install -y podman runc debootstrap`) "
        "or docker with its daemon running"
    ]


def test_the_engine_can_be_forced(tmp_path):
    both = which_of("docker", "podman")
    assert (
        container.choose_engine(tmp_path, which=both, docker_ok=lambda: True, prefer="podman").name
        == "podman"
    )
    with pytest.raises(ContainerError, match="docker was asked for but `docker info` fails"):
        container.choose_engine(tmp_path, which=both, docker_ok=lambda: False, prefer="docker")
    with pytest.raises(ContainerError, match="must be docker or podman, got 'lxc'"):
        container.choose_engine(tmp_path, which=both, docker_ok=lambda: True, prefer="lxc")


def test_docker_works_asks_the_daemon():
    def run(args, **_):
        assert args == ["docker", "info"]
        return subprocess.CompletedProcess(args, 1, "", "Cannot connect to the Docker daemon")

    assert container_commands.docker_works(run) is False

    def missing(args, **_):
        raise FileNotFoundError("docker")

    assert container_commands.docker_works(missing) is False


def test_the_tag_is_the_champions_name_and_version():
    assert container.image_tag({"name": "drug-classifier", "version": "3"}) == "drug-classifier:v3"
    assert container.image_tag({"name": "Penguins Model/x", "version": 12}) == "penguins-model-x:v12"
    assert container.container_name("drug-classifier:v3") == "nbops-space-drug-classifier-v3"


def test_build_lines_per_engine_and_base():
    standin = Base("localhost/python:3.11-slim", True, "no registry reachable")
    registry = Base("docker.io/library/python:3.11-slim", False, "pulled")
    label = "nbops.base=localhost/python:3.11-slim (Debian bookworm stand-in)"
    assert container.build_command(PODMAN, Path("space"), "m:v1", standin) == [
        "podman", "--runtime", "runc", "build", "-t", "m:v1", "--label", label,
        "--network", "host", "--pull=never", "space",
    ]  # fmt: skip
    assert "--pull=never" not in container.build_command(PODMAN, Path("space"), "m:v1", registry)
    assert container.build_command(DOCKER, Path("space"), "m:v1", registry) == [
        "docker", "build", "-t", "m:v1", "--label", "nbops.base=docker.io/library/python:3.11-slim", "space",
    ]  # fmt: skip


def test_run_binds_loopback_and_stop_names_the_container_by_id():
    assert container.run_command(PODMAN, "m:v1", "nbops-space-m-v1", 8123) == [
        "podman", "--runtime", "runc", "run", "-d", "--name", "nbops-space-m-v1",
        "-p", "127.0.0.1:8123:7860", "m:v1",
    ]  # fmt: skip
    assert container.stop_command(DOCKER, "abc123") == ["docker", "stop", "-t", "20", "abc123"]
    assert container.remove_command(DOCKER, "abc123") == ["docker", "rm", "abc123"]


def test_the_standin_recipe_has_the_three_fixes():
    steps = container.standin_script(Path("/r"))
    assert steps[0] == [
        "debootstrap",
        "--variant=minbase",
        "--include=python3,python3-venv",
        "bookworm",
        "/r",
    ]
    flat = [" ".join(s) for s in steps]
    assert "rm -f /r/usr/lib/python3.11/EXTERNALLY-MANAGED" in flat
    assert "ln -sf /usr/bin/python3 /r/usr/local/bin/python" in flat
    assert "cp /etc/ssl/certs/ca-certificates.crt /r/etc/ssl/certs/ca-certificates.crt" in flat
    assert PODMAN.standin_tag == "localhost/python:3.11-slim" and DOCKER.standin_tag == "python:3.11-slim"


class FakeEngine:
    """Answers the engine's commands from a table of (args prefix) -> (code, stdout, stderr), the
    first prefix that matches (a callable gives the answer for each call)."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]):
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, args, **kwargs):
        self.calls.append(args)
        for prefix, answer in self.answers.items():
            if tuple(args[: len(prefix)]) == prefix:
                code, out, err = answer() if callable(answer) else answer
                return subprocess.CompletedProcess(args, code, out, err)
        raise AssertionError(f"unexpected command {args}")


def boxed(tmp_path, answers, reachable=False):
    fake = FakeEngine(answers)
    box = Containers(tmp_path, engine=DOCKER, run=fake, say=lambda _: None)
    box.registry_reachable = lambda: reachable
    return box, fake


def test_the_registry_image_is_used_when_it_can_be_pulled(tmp_path):
    box, fake = boxed(
        tmp_path,
        {("docker", "image", "inspect"): (1, "", "No such image"), ("docker", "pull"): (0, "", "")},
        reachable=True,
    )
    base = box.ensure_base()
    assert base == Base("docker.io/library/python:3.11-slim", False, "from the registry, pulled")
    assert ["docker", "pull", "python:3.11-slim"] in fake.calls


def test_without_a_registry_the_standin_is_reused_when_built_before(tmp_path):
    box, fake = boxed(
        tmp_path,
        {
            ("docker", "image", "inspect", "docker.io/library/python:3.11-slim"): (1, "", "No such image"),
            ("docker", "image", "inspect", "python:3.11-slim"): (0, "[]", ""),
        },
    )
    base = box.ensure_base()
    assert base.standin and base.image == "python:3.11-slim"
    assert "built before" in str(base) and not any("pull" in c for c in fake.calls)


def test_stop_stops_exactly_the_recorded_container_and_forgets_it(tmp_path):
    box, fake = boxed(
        tmp_path,
        {
            ("docker", "stop"): (0, "abc\n", ""),
            ("docker", "inspect"): (0, "0\n", ""),
            ("docker", "rm"): (0, "abc\n", ""),
        },
    )
    box.state_file().write_text(json.dumps({"engine": "docker", "id": "abc", "name": "n", "image": "m:v1"}))
    record = box.stop()
    assert record["exit_code"] == 0
    assert fake.calls == [
        ["docker", "stop", "-t", "20", "abc"],
        ["docker", "inspect", "--format", "{{.State.ExitCode}}", "abc"],
        ["docker", "rm", "abc"],
    ]
    assert not box.state_file().exists()
    with pytest.raises(ContainerError, match="nothing to stop"):
        box.stop()


def test_run_refuses_a_second_container_while_one_is_recorded(tmp_path):
    box, _ = boxed(tmp_path, {})
    box.state_file().write_text(json.dumps({"engine": "docker", "id": "abcdef", "name": "n"}))
    with pytest.raises(
        ContainerError, match=r"container n \(abcdef\) is recorded as running: `make space-stop`"
    ):
        box.start(tmp_path, 7860)


def test_run_records_the_id_the_engine_printed(tmp_path):
    folder = tmp_path / "space"
    (folder / "champion").mkdir(parents=True)
    (folder / "champion" / "model_card.json").write_text(json.dumps({"name": "m", "version": "2"}))
    box, fake = boxed(
        tmp_path, {("docker", "image", "inspect"): (0, "[]", ""), ("docker", "run"): (0, "f00d\n", "")}
    )
    record = box.start(folder, 8001)
    assert fake.calls[-1] == [
        "docker",
        "run",
        "-d",
        "--name",
        "nbops-space-m-v2",
        "-p",
        "127.0.0.1:8001:7860",
        "m:v2",
    ]
    assert json.loads(box.state_file().read_text()) == record
    assert record["id"] == "f00d" and record["url"] == "http://127.0.0.1:8001/"


def test_a_rebuild_removes_the_image_the_tag_named_before(tmp_path):
    folder = tmp_path / "space"
    (folder / "champion").mkdir(parents=True)
    (folder / "champion" / "model_card.json").write_text(json.dumps({"name": "m", "version": "2"}))
    (folder / "Dockerfile").write_text("FROM python:3.11-slim\n")
    ids = iter(["sha256:old", "sha256:new"])
    box, fake = boxed(
        tmp_path,
        {
            ("docker", "image", "inspect", "--format", "{{.Id}}"): lambda: (0, next(ids), ""),
            ("docker", "image", "inspect", "--format", "{{.Size}}"): (0, "633000000\n", ""),
            ("docker", "image", "inspect", "python:3.11-slim"): (0, "[]", ""),  # the stand-in
            ("docker", "image", "inspect"): (1, "", "No such image"),
            ("docker", "build"): (0, "", ""),
            ("docker", "rmi"): (0, "", ""),
        },
    )
    assert box.build(folder) == "m:v2"
    assert ["docker", "rmi", "sha256:old"] in fake.calls
    assert box.image_size_mb("m:v2") == 633.0


def test_without_an_engine_the_command_says_what_to_install_in_one_line(tmp_path):
    import os
    import sys

    env = {**os.environ, "PATH": str(tmp_path)}  # no docker, no podman
    done = subprocess.run(
        [sys.executable, "-m", "nbops.serve.container", "--cache", str(tmp_path), "engine"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"error: {container_commands.INSTALL_HINT}"]
