"""nbops: parameterised notebooks as a tracked, gated ML pipeline.

Importing the package does no work: no folders, no tracking URI, no file reads.
"""

__version__ = "0.1.0"
