"""Build, run and stop the Space image from the folder `make space` writes (standard library only).

The engine is docker when its daemon answers, else podman. podman runs with `--runtime runc`
(crun cannot set up cgroups on hybrid hosts) and a containers.conf without default ulimits
(`setrlimit RLIMIT_NPROC` is refused in unprivileged sandboxes), given through CONTAINERS_CONF.

The base image is the registry's `python:3.11-slim` when it can be pulled. Where no registry
answers, a stand-in is built once per machine from Debian bookworm (python3 is 3.11 there) under
`.cache/containers/`, imported as `python:3.11-slim` locally, and the build runs with
`--pull=never`; the build log says which base was used.

    python -m nbops.serve.container base                      # the base image, registry or stand-in
    python -m nbops.serve.container build space               # the image, tagged <model>:v<version>
    python -m nbops.serve.container run space --port 7860     # detached on 127.0.0.1, id recorded
    python -m nbops.serve.container stop                      # stops and removes that container
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nbops.exceptions import print_problems
from nbops.serve.container_commands import (
    CACHE_DIR,
    REGISTRY_HOST,
    STANDIN_SUITE,
    Base,
    ContainerError,
    Engine,
    Runner,
    build_command,
    choose_engine,
    container_name,
    exit_code_command,
    image_tag,
    read_card,
    remove_command,
    run_command,
    standin_script,
    stop_command,
)
from nbops.serve.space import BASE_IMAGE, SPACE_PORT


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
            if tar.stdout is not None:
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
    parser = argparse.ArgumentParser(
        prog="python -m nbops.serve.container", description=__doc__.split("\n")[0]
    )
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
