"""``python -m loopwright.cli``: the same as the ``loopwright`` console script."""

from loopwright.cli.main import run

run()
