"""What `nbops --help` says besides the options: the environment variables the package reads
and the exit codes, per command (tests/unit/test_cli.py checks every variable src/ reads is here)."""

from __future__ import annotations

# (variable, the commands that read it, what it does); "" for every command
ENVIRONMENT = (
    ("MLFLOW_TRACKING_URI", "", "tracking and registry store (default: sqlite:///ROOT/mlflow/mlflow.db)"),
    ("MLFLOW_DISABLE_TELEMETRY", "", "MLflow's usage reports: set to true unless already set"),
    ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "", "MLflow's download progress bars: false unless set"),
    (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT",
        "",
        "with an http(s) tracking server: 2 retries, 30 s unless set",
    ),
    (
        "NBOPS_KEEP_WARM_S",
        "run drift sweep",
        "idle seconds a spare kernel is kept for the next run (default 600, 0 under CI); 0: no spares",
    ),
    (
        "NBOPS_OPTUNA_STORAGE",
        "sweep",
        "database URL of a search's Optuna study (default: optuna.db or schema optuna by the store)",
    ),
    (
        "NBOPS_SWEEP_WARM",
        "sweep",
        "1 (default): a worker's points run in kernels forked from one pre-imported kernel; 0: started anew",
    ),
    ("MPLBACKEND", "sweep", "matplotlib backend of a sweep worker's kernels (default: the inline one)"),
    ("CI", "run drift sweep", "true, 1 or yes: spare kernels default to off (NBOPS_KEEP_WARM_S wins)"),
    ("NBOPS_ROOT", "lab", "project folder of Lab's notebooks and the dashboard (`nbops lab` sets it)"),
    ("NBOPS_PARAMS", "lab", "params file Lab injects and the dashboard reads (`nbops lab` sets it)"),
    ("NBOPS_MODEL_DIR", "space", "the dashboard serves this model folder, not the champion"),
    ("HF_TOKEN", "deploy", "Hugging Face token with write access to the Space"),
    ("HF_SPACE_ID", "deploy", "default of --space-id"),
    ("HF_SPACE_VERSION_PATH", "deploy", "default of --version-path"),
    ("HEAD_SHA, GITHUB_SHA", "deploy", "the commit the Space commit names (HEAD_SHA first)"),
    (
        "WORKFLOW_RUN_ID, GITHUB_SERVER_URL, GITHUB_REPOSITORY",
        "comment",
        "the CI run's link when --run-url is not given",
    ),
)

EXIT_CODES = (
    (0, "", "done (a gate that rejects the challenger is a result, not a failure)"),
    (1, "", "failed: bad params or data, a failed step or point, a registry or Hub error"),
    (2, "", "bad usage: unknown command or option, bad value, an unknown step for run --only"),
    (3, "drift", "drift found and --fail-on-drift given"),
    (130, "run", "interrupted (Ctrl-C, or SIGTERM during run); unfinished steps rerun next time"),
)


def _for(command: str | None, rows: tuple) -> list[tuple]:
    return [row for row in rows if command is None or not row[1] or command in row[1].split()]


def epilog(command: str | None = None) -> str:
    """The environment variables and exit codes of `command` (all of them for None)."""
    width = 24
    lines = ["environment variables:"]
    for name, commands, text in _for(command, ENVIRONMENT):
        where = f"{commands}: " if command is None and commands else ""
        if len(name) > width:
            lines += [f"  {name}", f"  {'':{width}}  {where}{text}"]
        else:
            lines.append(f"  {name:{width}}  {where}{text}")
    lines.append("exit codes:")
    for code, commands, text in _for(command, EXIT_CODES):
        where = f"{commands}: " if command is None and commands else ""
        lines.append(f"  {code:<4} {where}{text}")
    if command == "space":
        lines.append("  serve replaces itself with Voila: its exit code is Voila's")
    return "\n".join(lines)
