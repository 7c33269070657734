"""The `nbops` command: every command and option documented, the environment variables the
package reads named in the epilog, one line and exit 2 on bad usage, `nbops lab`'s command line."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from nbops import cli
from tests.conftest import REPO

# read, but only to put the page template's folder first: not a setting of nbops
NOT_SETTINGS = {"JUPYTER_PATH"}


def parsers(parser: argparse.ArgumentParser, path=()):
    """(command path, parser) for the top level and every command and subcommand below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, (*path, name))


TREE = list(parsers(cli.build_parser()))


def test_the_tree_holds_every_command():
    commands = {path for path, _ in TREE if path}
    expected = {
        ("init",), ("run",), ("report",), ("lab",), ("champion",), ("rollback",), ("drift",), ("sweep",),
        ("space",), ("space", "build"), ("space", "serve"), ("deploy",), ("comment",), ("params-schema",),
        ("container",), *(("container", c) for c in ("base", "engine", "build", "run", "stop")),
    }  # fmt: skip
    assert commands == expected


@pytest.mark.parametrize("path", [p for p, _ in TREE], ids=lambda p: " ".join(p) or "nbops")
def test_help_exits_0(path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([*path, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: nbops {' '.join(path)}".rstrip())


@pytest.mark.parametrize(("path", "parser"), TREE, ids=lambda p: " ".join(p) if isinstance(p, tuple) else "")
def test_every_option_and_command_has_help(path, parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help, f"nbops {' '.join(path)} {choice.dest}: no help"
        else:
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"nbops {' '.join(path)} {name}: no help"


def test_version_is_the_installed_packages(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"nbops {version('nbops')}\n"
    import nbops

    assert nbops.__version__ == version("nbops")


def variables_read_by_the_package() -> set[str]:
    """Every environment variable name src/nbops reads (environ/env .get, .setdefault, [...],
    and the NAME_ENV / ENV_NAME constants)."""
    pattern = re.compile(
        r"""(?:environ|env)\s*(?:\.get|\.setdefault)?\(?\[?\s*["']([A-Z][A-Z0-9_]+)["']"""
        r"""|\b[A-Z_]*ENV[A-Z_]*\s*=\s*["']([A-Z][A-Z0-9_]+)["']"""
    )
    found = set()
    for path in (REPO / "src" / "nbops").rglob("*.py"):
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            found.add(match.group(1) or match.group(2))
    return found - NOT_SETTINGS


def test_the_epilog_names_every_variable_the_package_reads_and_the_exit_codes(capsys):
    variables = variables_read_by_the_package()
    assert {"MLFLOW_TRACKING_URI", "NBOPS_KEEP_WARM_S", "NBOPS_ROOT", "NBOPS_PARAMS", "HF_TOKEN"} <= variables
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    epilog = out[out.index("environment variables:") :]
    missing = sorted(v for v in variables if not re.search(rf"\b{v}\b", epilog))
    assert not missing, f"not in `nbops --help`: {missing}"
    codes = re.findall(r"^  (\d+) ", epilog[epilog.index("exit codes:") :], re.M)
    assert codes == ["0", "1", "2", "3", "130"]


def test_a_commands_epilog_names_its_variables(capsys):
    with pytest.raises(SystemExit):
        cli.main(["deploy", "--help"])
    out = capsys.readouterr().out
    assert "HF_TOKEN" in out and "NBOPS_KEEP_WARM_S" not in out
    with pytest.raises(SystemExit):
        cli.main(["drift", "--help"])
    assert "--fail-on-drift given" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--bogus"], r"^nbops run: error: unrecognized arguments: --bogus \(nbops run --help\)$"),
        (["run", "--jobs", "two"], r"^nbops run: error: argument --jobs: invalid int value: 'two'"),
        ([], r"^nbops: error: the following arguments are required: COMMAND \(nbops --help\)$"),
        (["frobnicate"], r"^nbops: error: argument COMMAND: invalid choice: 'frobnicate'"),
        (["space", "serve", "--port", "x"], r"^nbops space serve: error: argument --port"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1, captured.err
    assert re.search(message, captured.err.strip()), captured.err


def test_run_builds_no_other_commands_options():
    """`nbops run` imports no other command's module (the no-op rerun's budget)."""
    code = (
        "import sys; from nbops.cli import build_parser, command_in; "
        "build_parser(command_in(['run', '--force'])).parse_args(['run', '--force']); "
        "print(sorted(m for m in sys.modules if m.startswith('nbops')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['nbops', 'nbops.cli', 'nbops.cli_help']"  # the parser and its epilog


def test_python_dash_m_nbops_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "nbops", "--version"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"nbops {version('nbops')}\n")


@pytest.mark.parametrize("as_root", [False, True])
def test_lab_command_line(tmp_path, as_root):
    params = tmp_path / "params" / "smoke.yaml"
    argv, env = cli.lab_command(tmp_path, params, 8899, as_root=as_root)
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert "--ServerApp.ip=127.0.0.1" in argv and "--ServerApp.port=8899" in argv
    assert "--ServerApp.port_retries=0" in argv and f"--ServerApp.root_dir={tmp_path}" in argv
    assert "--ServerApp.contents_manager_class=nbops.lab.ParamsContentsManager" in argv
    assert ("--allow-root" in argv) is as_root
    assert env == {"NBOPS_ROOT": str(tmp_path), "NBOPS_PARAMS": str(params)}


def test_lab_execs_jupyterlab_with_the_projects_values(monkeypatch):
    calls = []

    def execve(path, argv, env):
        calls.append((path, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(cli.os, "execve", execve)
    with pytest.raises(SystemExit):
        cli.main(["lab", "--root", str(REPO), "--params", "params/smoke.yaml", "--port", "8901"])
    ((path, argv, env),) = calls
    assert path == sys.executable and "--ServerApp.port=8901" in argv
    assert env["NBOPS_ROOT"] == str(REPO) and env["NBOPS_PARAMS"] == str(REPO / "params" / "smoke.yaml")


def test_lab_with_a_bad_params_file_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli.os, "execve", lambda *a: pytest.fail("Lab started"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  pathh: x\n", encoding="utf-8")
    assert cli.main(["lab", "--params", str(bad)]) == 1
    assert "bad.yaml" in capsys.readouterr().err


def test_params_schema_writes_the_committed_schema(tmp_path, capsys):
    """What `make params-schema` writes; tests/unit/test_params_schema.py checks it against the files."""
    out = tmp_path / "schema" / "params.schema.json"
    assert cli.main(["params-schema", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (REPO / "params" / "params.schema.json").read_text(
        encoding="utf-8"
    )
    assert cli.main(["params-schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Params"
