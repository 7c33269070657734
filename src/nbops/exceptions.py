"""The project's exception family. Each message is the one line a user reads."""

import sys


class NbopsError(Exception):
    """Base class: a problem the user can fix; printed as one line per problem, exit 1."""

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ParamsError(NbopsError):
    """A params file is unreadable, has an unknown key, a wrong type or points at nothing."""


class DataError(NbopsError):
    """A data file is missing, malformed or fails its schema."""


class ModelError(NbopsError):
    """A model cannot be built, loaded or trusted."""


def _one_line(text: str, limit: int = 300) -> str:
    """A multi-line error value as one line: its first line, and its last when that differs
    (scikit-learn's 'All the 3 fits failed.' ends with the real cause)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return ""
    out = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1]}"
    return out if len(out) <= limit else out[: limit - 1] + "…"


class StepError(NbopsError):
    """A notebook step failed while executing; carries the step and the failing cell."""

    def __init__(self, step, cell_index=None, ename="", evalue=""):
        self.step = step
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue = _one_line(evalue)
        where = f"failed at {step}" + (f", cell {cell_index}" if cell_index is not None else "")
        detail = f": {ename}: {evalue}" if ename else (f": {evalue}" if evalue else "")
        super().__init__(where + detail)


def print_problems(exc: NbopsError) -> None:
    """How every command reports a user error: one `error:` line per problem, on stderr."""
    for line in exc.problems:
        print(f"error: {line}", file=sys.stderr)
