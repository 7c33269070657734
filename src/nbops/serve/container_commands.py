"""The Space image's engine, base and command lines, as data: which engine (docker when its
daemon answers, else podman with runc and a containers.conf without default ulimits), which base,
and the exact docker/podman arguments (nbops.serve.container runs them)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nbops.exceptions import NbopsError
from nbops.serve.space import BASE_IMAGE, SPACE_PORT

CACHE_DIR = Path(".cache") / "containers"
REGISTRY_HOST = "registry-1.docker.io"
STANDIN_SUITE = "bookworm"
INSTALL_HINT = (
    "no container engine: install podman (`apt-get install -y podman runc debootstrap`) "
    "or docker with its daemon running"
)
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"
BASE_LABEL = "nbops.base"  # the image label naming the base it was built on

Runner = Callable[..., subprocess.CompletedProcess]


class ContainerError(NbopsError):
    """No engine, a failed build or run, or no container recorded to stop."""


@dataclass(frozen=True)
class Engine:
    """A container engine's command prefix and the environment it needs."""

    name: str  # "docker" or "podman"
    prefix: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        return [*self.prefix, *args]

    @property
    def standin_tag(self) -> str:
        # podman resolves the Dockerfile's short name to localhost/ first; docker has no such prefix
        return f"localhost/{BASE_IMAGE}" if self.name == "podman" else BASE_IMAGE

    @property
    def registry_tag(self) -> str:
        return f"docker.io/library/{BASE_IMAGE}"


def containers_conf(cache: Path) -> Path:
    """The containers.conf podman reads through CONTAINERS_CONF (the machine's /etc is left alone)."""
    path = cache / "containers.conf"
    if not path.is_file() or path.read_text(encoding="utf-8") != CONTAINERS_CONF:
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(CONTAINERS_CONF, encoding="utf-8")
    return path


def docker_works(run: Runner = subprocess.run) -> bool:
    try:
        done = run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_engine(
    cache: Path,
    *,
    which: Callable[[str], str | None] = shutil.which,
    docker_ok: Callable[[], bool] = docker_works,
    prefer: str = "",
) -> Engine:
    """docker when present and its daemon answers, else podman; `prefer` ("docker", "podman") forces one."""
    if prefer not in ("", "docker", "podman"):
        raise ContainerError(f"the engine must be docker or podman, got {prefer!r}")
    if prefer != "podman" and which("docker") and docker_ok():
        return Engine("docker", ("docker",))
    if prefer == "docker":
        raise ContainerError("docker was asked for but `docker info` fails: start the docker daemon")
    if which("podman"):
        prefix = ("podman", "--runtime", "runc") if which("runc") else ("podman",)
        return Engine("podman", prefix, {"CONTAINERS_CONF": str(containers_conf(cache).resolve())})
    raise ContainerError(INSTALL_HINT)


def image_tag(card: dict) -> str:
    """`<model name>:v<version>` in the characters an image reference allows."""
    name = re.sub(r"[^a-z0-9._-]+", "-", str(card["name"]).lower()).strip("-._") or "model"
    return f"{name}:v{card['version']}"


def container_name(tag: str) -> str:
    return "nbops-space-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", tag)


def read_card(folder: Path) -> dict:
    path = folder / "champion" / "model_card.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ContainerError(f"{path}: missing or not JSON: build the folder with `make space`") from None


def build_command(engine: Engine, folder: Path, tag: str, base: Base) -> list[str]:
    args = ["build", "-t", tag, "--label", f"{BASE_LABEL}={base.label}"]
    if engine.name == "podman":
        # the build's pip reaches PyPI through the host's network (and its proxy)
        args += ["--network", "host"]
        if base.standin:
            args.append("--pull=never")
    return engine.command(*args, str(folder))


def run_command(engine: Engine, tag: str, name: str, port: int, host: str = "127.0.0.1") -> list[str]:
    return engine.command("run", "-d", "--name", name, "-p", f"{host}:{port}:{SPACE_PORT}", tag)


def stop_command(engine: Engine, container: str, timeout_s: int = 20) -> list[str]:
    """SIGTERM, then SIGKILL after `timeout_s` (Voila shuts its kernels down on SIGTERM)."""
    return engine.command("stop", "-t", str(timeout_s), container)


def exit_code_command(engine: Engine, container: str) -> list[str]:
    return engine.command("inspect", "--format", "{{.State.ExitCode}}", container)


def remove_command(engine: Engine, container: str) -> list[str]:
    return engine.command("rm", container)


def standin_script(rootfs: Path, suite: str = STANDIN_SUITE) -> list[list[str]]:
    """The commands that make a python:3.11-slim look-alike from Debian (CONTAINERS.md's recipe)."""
    root = str(rootfs)
    install = (
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "--no-install-recommends python3-pip && apt-get clean && rm -rf /var/lib/apt/lists/*"
    )
    return [
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", suite, root],
        ["cp", "/etc/resolv.conf", f"{root}/etc/resolv.conf"],
        ["chroot", root, "sh", "-c", install],
        # the real image has no PEP 668 marker, and `python` on PATH
        ["rm", "-f", f"{root}/usr/lib/python3.11/EXTERNALLY-MANAGED"],
        ["ln", "-sf", "/usr/bin/python3", f"{root}/usr/local/bin/python"],
        # HTTPS here may go through a proxy whose certificate only the host's bundle holds
        ["cp", "/etc/ssl/certs/ca-certificates.crt", f"{root}/etc/ssl/certs/ca-certificates.crt"],
    ]


@dataclass(frozen=True)
class Base:
    """The image the Dockerfile's FROM resolves to."""

    image: str
    standin: bool
    how: str

    @property
    def label(self) -> str:
        return f"{self.image} (Debian {STANDIN_SUITE} stand-in)" if self.standin else self.image

    def __str__(self) -> str:
        return f"{self.label}: {self.how}"
