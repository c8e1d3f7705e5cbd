"""``loopwright demo``: the seed scenario (``cli/scenario.py``), with ``--runner`` the runner
tour (``cli/demo.py``), with ``--review`` the weekly review (``cli/demo_review.py``); each loads
only when the command runs."""

from __future__ import annotations

from typing import Annotated

import typer


def demo(
    workdir: Annotated[
        str | None, typer.Option(help="Where the demo keeps its files (default: a temp dir).")
    ] = None,
    examples: Annotated[
        str, typer.Option(help="Folder with the example skills (--runner).")
    ] = "examples",
    runner: Annotated[
        bool,
        typer.Option(
            "--runner", help="The runner tour instead: example skills and a killed worker."
        ),
    ] = False,
    review: Annotated[
        bool,
        typer.Option(
            "--review", help="The weekly review instead, on five weeks of seeded history."
        ),
    ] = False,
) -> None:
    """The seed scenario: the builder writes, tests and registers skills that then run."""
    if review:
        from loopwright.cli.demo_review import run_review_demo

        raise typer.Exit(run_review_demo(workdir))
    if runner:
        from loopwright.cli.demo import run_demo

        raise typer.Exit(run_demo(workdir, examples))
    from loopwright.cli.scenario import run_scenario

    raise typer.Exit(run_scenario(workdir))
