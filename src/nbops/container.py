"""Build, run and stop the Space image from the folder `make space` writes (standard library only).

The engine is docker when its daemon answers, else podman. podman runs with `--runtime runc`
(crun cannot set up cgroups on hybrid hosts) and a containers.conf without default ulimits
(`setrlimit RLIMIT_NPROC` is refused in unprivileged sandboxes), given through CONTAINERS_CONF.

The base image is the registry's `python:3.11-slim` when it can be pulled. Where no registry
answers, a stand-in is built once per machine from Debian bookworm (python3 is 3.11 there) under
`.cache/containers/`, imported as `python:3.11-slim` locally, and the build runs with
`--pull=never`; the build log says which base was used.

    python -m nbops.container base                      # the base image, registry or stand-in
    python -m nbops.container build space               # the image, tagged <model>:v<version>
    python -m nbops.container run space --port 7860     # detached on 127.0.0.1, id recorded
    python -m nbops.container stop                      # stops and removes that container
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nbops.exceptions import NbopsError, print_problems
from nbops.space import BASE_IMAGE, SPACE_PORT

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


class Containers:
    """The engine, the cache folder and how commands are run (replaced in the unit tests)."""

    def __init__(
        self,
        cache: Path = CACHE_DIR,
        engine: Engine | None = None,
        run: Runner = subprocess.run,
        say: Callable[[str], None] = print,
        state: Path | None = None,
        prefer: str = "",
    ):
        self.cache = cache
        self.state = state or cache / "space-run.json"
        self.engine = engine or choose_engine(cache, prefer=prefer)
        self._run = run
        self.say = say

    def call(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = None,
        stdin=None,
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.engine.env}
        try:
            done = self._run(
                list(args), env=env, capture_output=capture, text=True, timeout=timeout, stdin=stdin
            )
        except subprocess.TimeoutExpired:
            raise ContainerError(f"`{' '.join(args[:4])} …` did not finish in {timeout:.0f} s") from None
        if check and done.returncode != 0:
            detail = ((done.stderr or "") + (done.stdout or "")).strip().splitlines()
            raise ContainerError(
                f"`{' '.join(args)}` failed ({done.returncode}): " + (detail[-1] if detail else "")
            )
        return done

    def image_exists(self, tag: str) -> bool:
        return self.call(self.engine.command("image", "inspect", tag), check=False).returncode == 0

    # ------------------------------------------------------------ the base image

    def registry_reachable(self) -> bool:
        try:
            socket.getaddrinfo(REGISTRY_HOST, 443)
        except OSError:
            return False
        return True

    def ensure_base(self) -> Base:
        """A local copy of the registry's image, a pull of it, or the Debian stand-in (built once)."""
        if self.image_exists(self.engine.registry_tag):
            return Base(self.engine.registry_tag, False, "from the registry, local copy")
        if self.registry_reachable():
            pulled = self.call(self.engine.command("pull", BASE_IMAGE), check=False, timeout=600)
            if pulled.returncode == 0:
                return Base(self.engine.registry_tag, False, "from the registry, pulled")
        tag = self.engine.standin_tag
        where = self.cache.resolve()
        where = where.relative_to(Path.cwd()) if where.is_relative_to(Path.cwd()) else where
        if self.image_exists(tag):
            return Base(tag, True, f"no registry reachable; built before in {where}/")
        self.build_standin(tag)
        return Base(tag, True, f"no registry reachable; built now in {where}/")

    def build_standin(self, tag: str) -> None:
        rootfs = self.cache / f"rootfs-{STANDIN_SUITE}"
        if not (rootfs / "usr" / "local" / "bin" / "python").is_symlink():
            missing = [t for t in ("debootstrap", "chroot") if not shutil.which(t)]
            if missing:
                raise ContainerError(
                    f"no {BASE_IMAGE} can be pulled and {missing[0]} is missing: "
                    "apt-get install -y debootstrap"
                )
            partial = rootfs.with_name(rootfs.name + ".partial")
            if partial.exists():
                shutil.rmtree(partial)
            self.cache.mkdir(parents=True, exist_ok=True)
            self.say(
                f"base: building the {STANDIN_SUITE} stand-in for {BASE_IMAGE} in {partial} (a few minutes)"
            )
            for step in standin_script(partial):
                self.call(step, timeout=1800)
            if rootfs.exists():
                shutil.rmtree(rootfs)
            partial.rename(rootfs)
        self.say(f"base: importing {rootfs} as {tag}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            self.call(self.engine.command("import", "-", tag), stdin=tar.stdout, timeout=900)
        finally:
            tar.stdout.close()
            tar.wait()

    # ------------------------------------------------------------ build, run, stop

    def build(self, folder: Path, tag: str | None = None) -> str:
        """The folder's image, tagged `tag` (default <model>:v<version>)."""
        if not (folder / "Dockerfile").is_file():
            raise ContainerError(f"{folder}: no Dockerfile: build the folder with `make space`")
        tag = tag or image_tag(read_card(folder))
        base = self.ensure_base()
        self.say(f"base image: {base}")
        self.say(f"building {tag} from {folder} with {' '.join(self.engine.command())}")
        before = self.image_id(tag)
        self.call(build_command(self.engine, folder, tag, base), capture=False)
        if before and before != self.image_id(tag):  # the image this tag named before, now untagged
            self.call(self.engine.command("rmi", before), check=False)
        self.say(f"built {tag} ({self.image_size_mb(tag):.0f} MB) on {base.label}")
        return tag

    def image_id(self, tag: str) -> str | None:
        done = self.call(self.engine.command("image", "inspect", "--format", "{{.Id}}", tag), check=False)
        if done.returncode != 0:
            return None
        return done.stdout.strip() or None

    def image_size_mb(self, tag: str) -> float:
        done = self.call(self.engine.command("image", "inspect", "--format", "{{.Size}}", tag))
        return int(done.stdout.strip()) / 1e6

    def state_file(self) -> Path:
        return self.state

    def start(
        self,
        folder: Path,
        port: int,
        host: str = "127.0.0.1",
        name: str | None = None,
        tag: str | None = None,
    ) -> dict:
        """Run the folder's image detached; the container's id is recorded for `stop`."""
        if self.state_file().is_file():
            old = json.loads(self.state_file().read_text(encoding="utf-8"))
            raise ContainerError(
                f"container {old['name']} ({old['id'][:12]}) is recorded as running: `make space-stop` first"
            )
        tag = tag or image_tag(read_card(folder))
        if not self.image_exists(tag):
            raise ContainerError(f"no image {tag}: build it with `make space-image`")
        name = name or container_name(tag)
        done = self.call(run_command(self.engine, tag, name, port, host))
        record = {
            "engine": self.engine.name,
            "id": done.stdout.strip().splitlines()[-1],
            "name": name,
            "image": tag,
            "url": f"http://{host}:{port}/",
        }
        self.state_file().parent.mkdir(parents=True, exist_ok=True)
        self.state_file().write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return record

    def stop(self) -> dict:
        """Stop and remove exactly the container `start` recorded."""
        path = self.state_file()
        if not path.is_file():
            raise ContainerError(f"no container recorded in {path}: nothing to stop")
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("engine") != self.engine.name:
            raise ContainerError(
                f"{path}: the container was started with {record.get('engine')}, not {self.engine.name}"
            )
        container = record["id"]
        stopped = self.call(stop_command(self.engine, container), check=False, timeout=120)
        if stopped.returncode != 0:
            if "no such container" not in (stopped.stderr or "").lower():
                raise ContainerError(f"stopping {record['name']} failed: {(stopped.stderr or '').strip()}")
            record["exit_code"] = None  # removed by hand already
        else:
            code = self.call(exit_code_command(self.engine, container)).stdout.strip()
            record["exit_code"] = int(code) if code.lstrip("-").isdigit() else None
            self.call(remove_command(self.engine, container), timeout=120)
        path.unlink()
        return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The container commands and options (also `nbops container`)."""
    parser.add_argument(
        "--cache", default=str(CACHE_DIR), help="where the stand-in, containers.conf and the run record live"
    )
    sub = parser.add_subparsers(
        dest="container_command", metavar="{base,engine,build,run,stop}", required=True
    )
    sub.add_parser("base", help="the base image: the registry's python:3.11-slim or the Debian stand-in")
    sub.add_parser("engine", help="print the engine command prefix")
    build = sub.add_parser("build", help="build the Space folder's image")
    build.add_argument("folder", nargs="?", default="space", help="the Space folder (default space/)")
    run = sub.add_parser("run", help="run the image detached on HOST:PORT")
    run.add_argument("folder", nargs="?", default="space", help="the Space folder (default space/)")
    run.add_argument("--host", default="127.0.0.1", help="address to publish on (default 127.0.0.1)")
    run.add_argument(
        "--port", type=int, default=SPACE_PORT, help=f"port to publish on (default {SPACE_PORT})"
    )
    parser.add_argument("--state", help="the run record (default CACHE/space-run.json)")
    parser.add_argument(
        "--engine",
        choices=("docker", "podman"),
        default=None,
        help="default: docker if it answers, else podman",
    )
    sub.add_parser("stop", help="stop and remove the container `run` started")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbops.container", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The container command parsed by add_arguments; the exit code."""
    try:
        box = Containers(
            Path(args.cache), state=Path(args.state) if args.state else None, prefer=args.engine or ""
        )
        if args.container_command == "engine":
            print(" ".join(box.engine.command()))
        elif args.container_command == "base":
            print(f"base image: {box.ensure_base()}")
        elif args.container_command == "build":
            box.build(Path(args.folder))
        elif args.container_command == "run":
            record = box.start(Path(args.folder), args.port, args.host)
            short = record["id"][:12]
            print(f"{record['image']} runs as container {record['name']} ({short}) at {record['url']}")
            print("stop it with: make space-stop")
        else:
            record = box.stop()
            code = record["exit_code"]
            print(f"stopped and removed {record['name']} ({record['id'][:12]}; exit code {code})")
    except ContainerError as exc:
        print_problems(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
