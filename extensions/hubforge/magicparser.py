"""argparse for IPython line magics: bad input is a `UsageError`, never an exit.

``%dask`` and ``%schedule`` parse their arguments with argparse. A plain
``ArgumentParser`` calls ``sys.exit`` on bad input or ``--help``, which in a kernel
prints a traceback. A magic subclasses `MagicParser` with its own `hint`::

    class _Parser(MagicParser):
        hint = "%dask --help lists the commands"

and catches `HelpShown` after parsing, when argparse printed help and there is nothing
more to do.
"""

from __future__ import annotations

import argparse

from IPython.core.error import UsageError


class HelpShown(Exception):
    """argparse printed help (``--help``): nothing more to do."""


class MagicParser(argparse.ArgumentParser):
    """argparse that reports bad input as a `UsageError` instead of exiting the kernel."""

    #: The last line of a usage error: where to find help.
    hint = "--help lists the commands"

    def error(self, message: str) -> None:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}\n({self.hint})")

    def exit(self, status: int = 0, message: str | None = None) -> None:
        if status:
            raise UsageError((message or "").strip() or self.format_usage())
        raise HelpShown


def count(text: str) -> int:
    """An argparse ``type``: a whole number of 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text!r}")
    return value
