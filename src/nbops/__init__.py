"""nbops: parameterised notebooks as a tracked, gated ML pipeline.

Importing the package does no work: no folders, no tracking URI, no file reads. The version is
the one place pyproject.toml names, read from the installed package's metadata when asked.
"""


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("nbops")
        except PackageNotFoundError:
            raise AttributeError("nbops.__version__: the package is not installed") from None
    raise AttributeError(f"module 'nbops' has no attribute {name!r}")
