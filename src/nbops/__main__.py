"""Command line: `python -m nbops run|sweep|drift|rollback|champion ...` (the Makefile wraps these)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nbops.exceptions import NbopsError, print_problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nbops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the notebook pipeline (skips unchanged steps)")
    run.add_argument("--params", default="params/default.yaml", help="params YAML file")
    run.add_argument("--root", default=".", help="project folder (notebooks/, build/, reports/)")
    run.add_argument("--force", action="store_true", help="rerun every step")
    run.add_argument(
        "--only",
        nargs="+",
        metavar="STEP",
        help="run these steps (and what they need): 01_eda 02_train 03_evaluate",
    )
    run.add_argument("--jobs", type=int, default=2, help="notebooks run at once (default 2)")

    from nbops.drift import EXIT_CODES_HELP, EXIT_DRIFT  # stdlib-only at import

    drift = sub.add_parser(
        "drift",
        help="compare the data with the champion's training data (KS, chi2)",
        description="Compare the current data with the champion's training sample (KS, chi2)\n"
        "and write reports/drift.{json,md,html}.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drift.add_argument("--params", default="params/default.yaml", help="params YAML file")
    drift.add_argument("--root", default=".", help="project folder")
    drift.add_argument("--retrain", action="store_true", help="run the pipeline when drift is found")
    drift.add_argument("--force", action="store_true", help="run the pipeline whatever the verdict")
    drift.add_argument(
        "--fail-on-drift",
        action="store_true",
        help=f"exit {EXIT_DRIFT} when drift is found (default: exit 0 and say so), for schedulers",
    )

    sweep = sub.add_parser("sweep", help="run a parameter sweep (local pool, or Dask with --scheduler)")
    sweep.add_argument("--sweep", required=True, help="sweep YAML file (params/sweeps/*.yaml)")
    sweep.add_argument("--root", default=".", help="project folder")
    sweep.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://127.0.0.1:8786")
    sweep.add_argument("--workers", type=int, help="local pool size (default: the number of cores)")
    sweep.add_argument("--shard", metavar="I/N", help="run only every N-th point from the I-th; no gate")
    sweep.add_argument("--aggregate", action="store_true", help="run nothing: report and gate from build/")
    sweep.add_argument("--no-promote", action="store_true", help="never move champion (pull requests)")
    sweep.add_argument("--check", action="store_true", help="validate every point, run nothing")

    for name, text in (
        ("report", "re-render reports/ from the last executed notebooks"),
        ("rollback", "move champion back to the previous champion"),
        ("champion", "print the champion version"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--params", default="params/default.yaml")
        p.add_argument("--root", default=".")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "drift":
        from nbops.drift import main_drift

        return main_drift(args.params, args.root, args.retrain, args.force, args.fail_on_drift)
    if args.command == "sweep" and args.check:
        from nbops.sweep import main_check

        return main_check(args.sweep, args.root)
    if args.command == "sweep":
        from nbops.sweep import main_sweep

        return main_sweep(
            args.sweep,
            args.root,
            args.scheduler,
            args.workers,
            args.shard,
            args.aggregate,
            not args.no_promote,
        )
    if args.command == "run":
        from nbops.runner import main_run

        return main_run(args.params, args.root, args.force, args.only, args.jobs)
    if args.command == "report":
        from nbops.runner import render_only

        try:
            print(f"reports: {render_only(args.params, args.root) / 'index.html'}")
        except NbopsError as exc:
            print_problems(exc)
            return 1
        return 0
    try:
        from nbops import tracking
        from nbops.params import load_params

        root = Path(args.root).resolve()
        params = load_params(Path(args.params) if Path(args.params).is_absolute() else root / args.params)
        tracking.configure_tracking(root)
        name = params.registry.model_name
        if args.command == "rollback":
            old, new = tracking.rollback_champion(name)
            print(f"champion of {name}: v{old} -> v{new}")
        else:
            version = tracking.get_alias_version(name, tracking.CHAMPION)
            print(f"{name} v{version.version}" if version else f"{name}: no champion yet")
    except NbopsError as exc:
        print_problems(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
