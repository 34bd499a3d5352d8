"""``python -m sam2serve``: the same command line as the ``sam2serve`` script."""

from sam2serve.cli import run

run()
