"""The command line: Click commands only, each a thin layer over one library call; the only
part of provisioner that imports click.

`main` is the console entry point (pyproject's script); `cli` is the command group.
"""

from provisioner.cli.main import cli, main

__all__ = ["cli", "main"]
