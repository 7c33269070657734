"""`make bench`: measured speed of the pipeline against the plain-script floor and the usual way."""
