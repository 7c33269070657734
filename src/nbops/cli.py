"""The `nbops` command: every command of the project in one parser (`python -m nbops` is the same).

A command's work, and the options a command module declares itself (space, deploy, comment,
drift's exit codes), are imported only when that command runs or its help is shown: `nbops run`
pays for no other command's imports.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from nbops.cli_help import epilog

PROG = "nbops"
DEFAULT_PARAMS = "params/default.yaml"
LAB_PORT = 8888
EVERY = "*"  # build_parser(EVERY): every command's options (help, tests)


class Parser(argparse.ArgumentParser):
    """Bad usage is one line on stderr and exit 2; the usage is in `--help`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help)\n")


class _Version(argparse.Action):
    """--version, read from the installed package's metadata only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("nbops")
        except PackageNotFoundError:
            parser.exit(1, f"{PROG}: not installed, no version (pip install -e .)\n")
        print(f"{PROG} {text}")
        parser.exit(0)


def _params_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--params", default=DEFAULT_PARAMS, help=f"params YAML file: {what} (default {DEFAULT_PARAMS})"
    )


def _root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root", default=".", help="project folder holding notebooks/, params/, build/ (default .)"
    )


def _add_run(p: argparse.ArgumentParser) -> None:
    _params_option(p, "the pipeline's values")
    _root_option(p)
    p.add_argument("--force", action="store_true", help="rerun every step")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="STEP",
        help="run these steps (and what they need): 01_eda 02_train 03_evaluate",
    )
    p.add_argument("--jobs", type=int, default=2, help="notebooks run at once (default 2)")


def _add_report(p: argparse.ArgumentParser) -> None:
    _params_option(p, "the run whose notebooks are rendered")
    _root_option(p)


def _add_registry(p: argparse.ArgumentParser) -> None:
    _params_option(p, "names the registered model")
    _root_option(p)


def _add_lab(p: argparse.ArgumentParser) -> None:
    _params_option(p, "the values injected into each notebook")
    _root_option(p)
    p.add_argument("--port", type=int, default=LAB_PORT, help=f"port on 127.0.0.1 (default {LAB_PORT})")


def _add_drift(p: argparse.ArgumentParser) -> None:
    from nbops.runner.drift import EXIT_CODES_HELP, EXIT_DRIFT  # stdlib-only at import

    p.epilog = f"{epilog('drift').split('exit codes:')[0]}{EXIT_CODES_HELP}"
    _params_option(p, "names the model and the data")
    _root_option(p)
    p.add_argument("--retrain", action="store_true", help="run the pipeline when drift is found")
    p.add_argument("--force", action="store_true", help="run the pipeline whatever the verdict")
    p.add_argument(
        "--fail-on-drift",
        action="store_true",
        help=f"exit {EXIT_DRIFT} when drift is found (default: exit 0 and say so), for schedulers",
    )


def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep", required=True, help="sweep YAML file (params/sweeps/*.yaml)")
    _root_option(p)
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786 (extra: dask)")
    p.add_argument("--workers", type=int, help="local pool size (default: the number of cores)")
    p.add_argument("--shard", metavar="I/N", help="run only every N-th point from the I-th; no gate")
    p.add_argument("--aggregate", action="store_true", help="run nothing: report and gate from build/")
    p.add_argument("--no-promote", action="store_true", help="never move champion (pull requests)")
    p.add_argument("--check", action="store_true", help="validate every point, run nothing")
    p.add_argument("--trials", type=int, metavar="N", help="a search's trials in all (default: its n_trials)")


def _add_init(p: argparse.ArgumentParser) -> None:
    p.add_argument("csv", help="the table to write a params file for (CSV; the delimiter is sniffed)")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--out", metavar="FILE", help="the params file to write (default params/<CSV name>.yaml)")
    p.add_argument("--delimiter", help="the CSV's field separator, when sniffing guesses wrong")
    p.add_argument("--force", action="store_true", help="overwrite --out when it exists")
    _root_option(p)


def _add_params_schema(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="FILE", help="write the schema to FILE (default: print it)")


# commands whose module keeps its own options (add_arguments) and runs them (run)
DELEGATED = {
    "space": "nbops.serve.space",
    "container": "nbops.serve.container",
    "deploy": "nbops.serve.deploy",
    "comment": "nbops.comment",
}


def _delegated(module: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        import importlib

        importlib.import_module(module).add_arguments(p)

    return add


# name: (one-line help, what adds its options); the order of `nbops --help`
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "init": ("write a commented params file for a CSV: columns, floors, registry name", _add_init),
    "run": (
        "run the notebook pipeline into build/<name>/, reports/<name>/ (skips unchanged steps)",
        _add_run,
    ),
    "report": ("re-render reports/<name>/ from the last executed notebooks", _add_report),
    "lab": ("JupyterLab on 127.0.0.1 with the params' values injected into each notebook", _add_lab),
    "champion": ("print the champion version", _add_registry),
    "rollback": ("move champion back to the previous champion", _add_registry),
    "drift": ("compare the data with the champion's training data (KS, chi2)", _add_drift),
    "sweep": ("run a parameter sweep (local pool, or Dask with --scheduler)", _add_sweep),
    "space": (
        "build or serve the Hugging Face Space folder of the champion",
        _delegated(DELEGATED["space"]),
    ),
    "container": (
        "build, run and stop the Space folder's image with docker or podman",
        _delegated(DELEGATED["container"]),
    ),
    "deploy": (
        "upload space/ to its Hugging Face Space and wait until it serves",
        _delegated(DELEGATED["deploy"]),
    ),
    "comment": (
        "write a pull request's comment from a CI run's summary (CI)",
        _delegated(DELEGATED["comment"]),
    ),
    "params-schema": (
        "print the JSON schema of params/*.yaml (params/params.schema.json)",
        _add_params_schema,
    ),
}
DESCRIPTIONS = {
    "drift": "Compare the current data with the champion's training sample (KS, chi2)\n"
    "and write reports/<name>/drift.{json,md,html} (<name>: the params file's stem).",
    "lab": "JupyterLab on 127.0.0.1:PORT. Opening notebooks/<step>.ipynb injects what the pipeline\n"
    "would pass for PARAMS; hand runs write build/lab/<name>/; saving strips the injected cell\n"
    "and outputs.",
}


def command_in(argv: list[str]) -> str | None:
    """The command `argv` names: its first word that is not an option (the top level has only
    --help and --version)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = EVERY) -> argparse.ArgumentParser:
    """The parser; with the options of `command` only (EVERY: of every command)."""
    parser = Parser(
        prog=PROG,
        description="Parameterised notebooks as a tracked, gated ML pipeline.",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (text, add_options) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=text,
            description=DESCRIPTIONS.get(name, text[0].upper() + text[1:] + "."),
            epilog=epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if command in (EVERY, name):
            add_options(p)
    return parser


def _project_path(root: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else root / path


def lab_command(root: Path, params: Path, port: int, as_root: bool) -> tuple[list[str], dict[str, str]]:
    """JupyterLab's command line and the variables it adds: the contents manager that injects
    the params' values reads NBOPS_ROOT and NBOPS_PARAMS; loopback only, no port retries."""
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.contents_manager_class=nbops.lab.ParamsContentsManager",
        "--LabApp.default_url=/lab/tree/notebooks",
        # CurveZMQ between the server and its kernels, as the runner's and Voila's kernels have
        "--KernelManager.transport_encryption=auto",
    ]
    if as_root:
        argv.append("--allow-root")
    return argv, {"NBOPS_ROOT": str(root), "NBOPS_PARAMS": str(params)}


def _lab(args: argparse.Namespace) -> int:
    import importlib.util

    from nbops.params import load_params

    root = Path(args.root).resolve()
    params = _project_path(root, args.params).resolve()
    load_params(params)  # a mistyped file stops here, not in every notebook Lab opens
    if importlib.util.find_spec("jupyterlab") is None:
        print("error: JupyterLab is not installed: pip install 'nbops[lab]'", file=sys.stderr)
        return 1
    argv, env = lab_command(root, params, args.port, as_root=hasattr(os, "geteuid") and os.geteuid() == 0)
    sys.stdout.flush()
    os.execve(argv[0], argv, {**os.environ, **env})  # same PID: stopping it stops Lab


def _registry(args: argparse.Namespace) -> int:
    from nbops.ml import registry, tracking
    from nbops.params import load_params

    root = Path(args.root).resolve()
    params = load_params(_project_path(root, args.params))
    tracking.configure_tracking(root)
    name = params.registry.model_name
    if args.command == "rollback":
        old, new = registry.rollback_champion(name)
        print(f"champion of {name}: v{old} -> v{new}")
    else:
        version = registry.get_alias_version(name, tracking.CHAMPION)
        print(f"{name} v{version.version}" if version else f"{name}: no champion yet")
    return 0


def _report(args: argparse.Namespace) -> int:
    from nbops.runner.pipeline import render_only

    print(f"reports: {render_only(args.params, args.root) / 'index.html'}")
    return 0


def _params_schema(args: argparse.Namespace) -> int:
    from nbops.params import params_schema_text

    text = params_schema_text()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _init(args: argparse.Namespace) -> int:
    from nbops.init_params import write_params_file

    root = Path(args.root).resolve()
    out = write_params_file(
        Path(args.csv),
        args.target,
        root=root,
        out=Path(args.out) if args.out else None,
        delimiter=args.delimiter,
        force=args.force,
    )
    shown = out.relative_to(root) if out.is_relative_to(root) else out
    print(f"wrote {shown}: check its columns and floors, then `make pipeline PARAMS={shown}`")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "run":
        from nbops.runner.pipeline import main_run

        return main_run(args.params, args.root, args.force, args.only, args.jobs)
    if command == "drift":
        from nbops.runner.drift import main_drift

        return main_drift(args.params, args.root, args.retrain, args.force, args.fail_on_drift)
    if command == "sweep" and args.check:
        from nbops.sweep.run import main_check

        return main_check(args.sweep, args.root)
    if command == "sweep":
        from nbops.sweep.run import main_sweep

        promote = not args.no_promote
        return main_sweep(
            args.sweep, args.root, args.scheduler, args.workers, args.shard, args.aggregate, promote,
            args.trials,
        )  # fmt: skip
    if command in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[command]).run(args)
    handlers = {
        "init": _init,
        "report": _report,
        "lab": _lab,
        "champion": _registry,
        "rollback": _registry,
        "params-schema": _params_schema,
    }
    return handlers[command](args)


def _deepest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command's own parser: its prog names it in an error."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None):
            return _deepest(action.choices[getattr(args, action.dest)], args)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_in(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        _deepest(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    from nbops.exceptions import NbopsError, print_problems

    try:
        return _dispatch(args)
    except NbopsError as exc:
        print_problems(exc)
        return 1
