"""``%dask``: start, list, scale and stop Dask clusters from a notebook.

::

    %dask start 4                         # a cluster of 4 workers; sets `client`
    %dask start --adaptive 1 8 --cores 2 --memory 4
    %dask list                            # your running clusters, as a DataFrame
    %dask connect 3f2a...                 # a client for a running one; sets `client`
    %dask scale 3f2a... 6
    %dask adapt 3f2a... 0 8
    %dask stop 3f2a...                    # or: %dask stop --all
    %dask limits                          # what you may take
    %dask widget                          # the cluster widget

Each subcommand is a thin wrapper over the `hubforge.dask` function of the same name
(``start`` is `hubforge.dask.cluster`, ``stop`` is `hubforge.dask.shutdown`). Bad
input and refused requests (over a limit, an unknown cluster) show one line of
explanation and the usage, never a traceback. ``hubforge.singleuser`` registers the
magic in every kernel; importing this module imports neither dask nor ipywidgets.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from ..magicparser import HelpShown, MagicParser
from ..magicparser import count as _count
from traitlets import Dict

USAGE = """\
Usage: %dask COMMAND [ARGUMENTS]    Dask clusters through the hub's gateway

  %dask start [N] [--adaptive MIN MAX] [--cores C] [--memory GIB] [--no-wait]
                              start a cluster of N workers (or adaptive between MIN
                              and MAX), each with C cores and GIB GiB of memory;
                              stores the client in `client`
  %dask list [--all]          your running clusters (admins: everyone's with --all)
  %dask connect NAME          a client for your running cluster NAME; stores it in `client`
  %dask scale NAME N          ask cluster NAME for N workers
  %dask adapt NAME MIN MAX    scale cluster NAME between MIN and MAX workers with the load
  %dask stop NAME | --all     shut cluster NAME, or all of your clusters, down
  %dask limits                what you may take (clusters, workers, cores, memory)
  %dask widget                sliders, buttons and live status
  %dask COMMAND --help        help on one command
"""

#: Columns of ``%dask list``, in order.
LIST_COLUMNS = ("name", "user", "status", "workers", "workers_requested", "adaptive",
                "worker_cores", "worker_memory", "max_workers", "origin", "dashboard_link")


class _Parser(MagicParser):
    hint = "%dask --help lists the commands"


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a number more than 0, got {text!r}")
        return value

    convert.__name__ = kind.__name__
    return convert


def make_parser() -> argparse.ArgumentParser:
    """The ``%dask`` command line (subcommands as in `USAGE`)."""
    parser = _Parser(prog="%dask", add_help=False)  # the magic prints USAGE for --help
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    start = commands.add_parser("start", help="start a cluster")
    start.add_argument("workers", nargs="?", type=_count, metavar="N", help="workers to start with")
    start.add_argument("--adaptive", nargs=2, type=_count, metavar=("MIN", "MAX"),
                       help="scale between MIN and MAX workers with the load (instead of N)")
    start.add_argument("--cores", type=_positive(int), metavar="C", help="cores per worker")
    start.add_argument("--memory", type=_positive(float), metavar="GIB", help="memory per worker, in GiB")
    start.add_argument("--no-wait", action="store_true", help="return before the workers are ready")

    listing = commands.add_parser("list", help="your running clusters")
    listing.add_argument("--all", action="store_true", help="everyone's clusters (hub admins)")

    connect = commands.add_parser("connect", help="a client for a running cluster")
    connect.add_argument("name", metavar="NAME")

    scale = commands.add_parser("scale", help="ask a cluster for N workers")
    scale.add_argument("name", metavar="NAME")
    scale.add_argument("workers", type=_count, metavar="N")

    adapt = commands.add_parser("adapt", help="scale a cluster with the load")
    adapt.add_argument("name", metavar="NAME")
    adapt.add_argument("minimum", type=_count, metavar="MIN")
    adapt.add_argument("maximum", type=_count, metavar="MAX")

    stop = commands.add_parser("stop", help="shut clusters down")
    which = stop.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?", metavar="NAME")
    which.add_argument("--all", action="store_true", help="all of your clusters")

    commands.add_parser("limits", help="what you may take")
    commands.add_parser("widget", help="the cluster widget")
    return parser


@magics_class
class DaskMagics(Magics):
    """``%dask``: Dask clusters through the hub's ``dask-gateway`` service."""

    gateway_kwargs = Dict(
        help="""Keyword arguments for `dask_gateway.Gateway` in every ``%dask`` command.

        Default: empty, so the environment the hub gives each server configures the
        gateway (``DASK_GATEWAY__ADDRESS`` and hub authentication). Set it to reach
        another gateway, as the tests do::

            c.DaskMagics.gateway_kwargs = {"address": "http://127.0.0.1:8000/services/dask-gateway"}
        """,
    ).tag(config=True)

    @line_magic
    def dask(self, line: str) -> Any:
        """Start, list, scale and stop Dask clusters; ``%dask --help`` lists the commands.

        Examples::

            %dask start 2 --memory 4
            %dask list
            %dask stop --all
        """
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"{e}\n{USAGE}") from None
        if not words or words[0] in ("-h", "--help", "help"):
            print(USAGE, end="")
            return None
        try:
            args = make_parser().parse_args(words)
        except HelpShown:
            return None
        from . import DaskError

        try:
            return getattr(self, f"_{args.command}")(args)
        except DaskError as e:
            # UsageError shows just the message: the traceback would only show our frames.
            raise UsageError(str(e)) from None

    # --- the commands ---------------------------------------------------------------

    @property
    def _kwargs(self) -> dict[str, Any]:
        return {"gateway_kwargs": dict(self.gateway_kwargs) or None}

    def _start(self, args: argparse.Namespace) -> Any:
        from . import cluster

        adaptive = tuple(args.adaptive) if args.adaptive else None
        try:
            client = cluster(args.workers, adaptive=adaptive, worker_cores=args.cores,
                             worker_memory=args.memory, wait=not args.no_wait, **self._kwargs)
        except TimeoutError:
            raise UsageError(
                "the cluster started but its workers were not ready in time; it keeps "
                "starting: see %dask list, then %dask connect NAME (or %dask stop NAME)"
            ) from None
        self.shell.user_ns["client"] = client
        return client

    def _list(self, args: argparse.Namespace) -> Any:
        from . import list_clusters
        from .settings import format_memory

        clusters = list_clusters(all_users=args.all, **self._kwargs)
        if not clusters:
            print("No running clusters.")
            return None
        import pandas as pd

        rows = [{**c, "worker_memory": format_memory(c["worker_memory"]) if c.get("worker_memory") else None}
                for c in clusters]
        return pd.DataFrame(rows, columns=list(LIST_COLUMNS))

    def _connect(self, args: argparse.Namespace) -> Any:
        from . import connect

        client = connect(args.name, **self._kwargs)
        self.shell.user_ns["client"] = client
        return client

    def _scale(self, args: argparse.Namespace) -> None:
        from . import scale

        scale(args.name, args.workers, **self._kwargs)
        print(f"Cluster {args.name}: scaling to {args.workers} worker{'s' if args.workers != 1 else ''}.")

    def _adapt(self, args: argparse.Namespace) -> None:
        from . import adapt

        adapt(args.name, args.minimum, args.maximum, **self._kwargs)
        print(f"Cluster {args.name}: adapting between {args.minimum} and {args.maximum} workers.")

    def _stop(self, args: argparse.Namespace) -> None:
        from . import shutdown

        if args.all:
            stopped = shutdown(all=True, **self._kwargs)
        else:
            stopped = shutdown(args.name, **self._kwargs)
        self._close_client(stopped)
        if stopped:
            print("Stopped: " + ", ".join(stopped))
        else:
            print("No running clusters to stop.")

    def _limits(self, args: argparse.Namespace) -> dict[str, Any]:
        from . import limits
        from .settings import format_memory

        return {k: format_memory(v) if k.endswith("memory") else v for k, v in limits(**self._kwargs).items()}

    def _widget(self, args: argparse.Namespace) -> Any:
        from .widgets import ClusterWidget

        return ClusterWidget(**self._kwargs)

    def _close_client(self, stopped: list[str]) -> None:
        """Close the notebook's `client` if its cluster was stopped (else it tries to reconnect)."""
        client = self.shell.user_ns.get("client")
        name = getattr(getattr(client, "cluster", None), "name", None)
        if name is not None and name in stopped:
            from . import disconnect

            disconnect(client)
