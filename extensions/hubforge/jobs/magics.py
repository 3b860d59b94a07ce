"""``%schedule``: scheduled notebook jobs from a cell.

::

    %schedule --cron "0 6 * * *" --timezone Europe/Paris -p alpha=0.5 --retries 2
    %schedule --once -p n=3                # one run of this notebook, now
    %schedule --watch "incoming/*.csv"     # a run per new file
    %schedule list                         # your jobs
    %schedule runs nightly                 # a job's runs (by name or id)
    %schedule run nightly --wait           # run it now, wait for the end
    %schedule pause nightly                # resume, delete likewise
    %schedule cancel 17                    # a run
    %schedule output 17 [PATH]             # save a run's output notebook
    %schedule widget                       # the form and the runs table

Each command is a thin wrapper over the `hubforge.jobs` function of the same name
(creating is `schedule`). Parameter values (``-p name=value``) are Python literals
(``-p n=3``, ``-p xs=[1,2]``, ``-p "s='3'"`` for the text ``3``), anything else is
text. Bad input and refused requests show one line (the service's message), never a
traceback. ``hubforge.singleuser`` registers the magic in every kernel; importing this
module imports neither pandas nor ipywidgets.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from ..magicparser import HelpShown, MagicParser
from ..magicparser import count as _count
from .cli import parse_parameter  # one -p syntax for the CLI and the magic

USAGE = """\
Usage: %schedule [OPTIONS]           schedule this notebook (or --notebook PATH)
       %schedule COMMAND [ARGUMENTS]  look after your jobs and runs

Scheduling (one trigger; default --once):
  --cron EXPR [--timezone TZ]   on a cron schedule ("0 6 * * 1-5"), in TZ (default UTC)
  --once                        one run now
  --watch GLOB [--watch-parameter NAME]
                                a run per new file matching GLOB under your home; its
                                path goes into parameter NAME (default trigger_file)
  -p, --parameter NAME=VALUE    a value for the parameters cell (a Python literal, else
                                text); repeat for more
  --notebook PATH               the notebook to schedule (default: this one, as saved)
  --name NAME                   the job's name (default: the notebook's file name)
  --profile PROFILE             the profile its runs use (default: your default)
  --timeout SECONDS             how long a run may take
  --retries N [--retry-backoff SECONDS]
                                attempts after a failure, waiting SECONDS, then twice that...
  --missed run_once|skip        runs missed while the service was down
  --notify-url URL [--notify-on failure|success ...]
                                a webhook called when runs end
  --keep-runs N, --keep-days D  how many runs (and outputs) to keep
  --paused                      create it paused

Commands (JOB is a job's name or id, RUN a run's id):
  %schedule list [--all]        your jobs (admins: everyone's with --all)
  %schedule runs [JOB] [--status S] [--limit N]
                                runs, newest first
  %schedule run JOB [-p NAME=VALUE ...] [--wait]
                                run a job now
  %schedule pause JOB | resume JOB | delete JOB
  %schedule cancel RUN          cancel a queued or running run
  %schedule output RUN [PATH] [--overwrite]
                                save a run's output notebook (default
                                job-outputs/<job>/run-<RUN>.ipynb)
  %schedule log RUN             a run's log
  %schedule widget              the scheduling form with the notebook's jobs and runs
  %schedule COMMAND --help      help on one command
"""

#: Columns of ``%schedule list`` and ``%schedule runs``, in order.
JOB_COLUMNS = ("id", "name", "notebook", "trigger", "profile", "paused", "next_run", "last_run")
RUN_COLUMNS = ("id", "job_name", "status", "trigger", "attempt", "started_at", "duration",
               "progress", "reason")

COMMANDS = ("list", "runs", "run", "pause", "resume", "delete", "cancel", "output", "log", "widget")


class _Parser(MagicParser):
    hint = "%schedule --help lists the commands"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds more than 0, got {text!r}")
    return int(value) if value.is_integer() else value


def _add_parameters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--parameter", dest="parameters", action="append", default=[],
                        type=parse_parameter, metavar="NAME=VALUE",
                        help="a value for the notebook's parameters cell (repeat for more)")


def make_schedule_parser() -> argparse.ArgumentParser:
    """The command line of ``%schedule [OPTIONS]`` (creating a job)."""
    parser = _Parser(prog="%schedule", add_help=False)  # the magic prints USAGE for --help
    trigger = parser.add_mutually_exclusive_group()
    trigger.add_argument("--cron", metavar="EXPR")
    trigger.add_argument("--once", action="store_true")
    trigger.add_argument("--watch", metavar="GLOB")
    parser.add_argument("--timezone", metavar="TZ")
    parser.add_argument("--watch-parameter", metavar="NAME", default="trigger_file")
    _add_parameters(parser)
    parser.add_argument("--notebook", metavar="PATH")
    parser.add_argument("--name")
    parser.add_argument("--profile")
    parser.add_argument("--timeout", type=_seconds, metavar="SECONDS")
    parser.add_argument("--retries", type=_count, metavar="N")
    parser.add_argument("--retry-backoff", type=_seconds, metavar="SECONDS")
    parser.add_argument("--missed", choices=("run_once", "skip"))
    parser.add_argument("--notify-url", metavar="URL")
    parser.add_argument("--notify-on", action="append", choices=("failure", "success"))
    parser.add_argument("--keep-runs", type=_count, metavar="N")
    parser.add_argument("--keep-days", type=_seconds, metavar="D")
    parser.add_argument("--paused", action="store_true")
    return parser


def make_command_parser() -> argparse.ArgumentParser:
    """The command line of ``%schedule COMMAND`` (subcommands as in `USAGE`)."""
    parser = _Parser(prog="%schedule", add_help=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="your jobs")
    listing.add_argument("--all", action="store_true", help="everyone's jobs (hub admins)")

    runs = commands.add_parser("runs", help="runs, newest first")
    runs.add_argument("job", nargs="?", metavar="JOB", help="one job's runs (name or id)")
    runs.add_argument("--status", choices=("queued", "running", "succeeded", "failed",
                                           "timed_out", "cancelled"))
    runs.add_argument("--limit", type=_count, default=50, metavar="N")

    run = commands.add_parser("run", help="run a job now")
    run.add_argument("job", metavar="JOB")
    _add_parameters(run)
    run.add_argument("--wait", action="store_true", help="wait for the run to end")

    for name, what in (("pause", "stop a job's trigger"), ("resume", "restart a job's trigger"),
                       ("delete", "delete a job, its runs and outputs")):
        commands.add_parser(name, help=what).add_argument("job", metavar="JOB")

    cancel = commands.add_parser("cancel", help="cancel a queued or running run")
    cancel.add_argument("run", type=_count, metavar="RUN")

    output = commands.add_parser("output", help="save a run's output notebook")
    output.add_argument("run", type=_count, metavar="RUN")
    output.add_argument("path", nargs="?", metavar="PATH")
    output.add_argument("--overwrite", action="store_true", help="replace an existing file")

    log = commands.add_parser("log", help="a run's log")
    log.add_argument("run", type=_count, metavar="RUN")

    commands.add_parser("widget", help="the scheduling form with the notebook's jobs and runs")
    return parser


def describe_trigger(trigger: dict[str, Any] | None) -> str:
    """``cron 0 6 * * * (UTC)``, ``once`` or ``watch incoming/*.csv``."""
    trigger = trigger or {}
    kind = trigger.get("type", "")
    if kind == "cron":
        return f"cron {trigger.get('cron', '')} ({trigger.get('timezone') or 'UTC'})"
    if kind == "watch":
        return f"watch {trigger.get('path', '')}"
    return str(kind)


@magics_class
class JobsMagics(Magics):
    """``%schedule``: scheduled notebook jobs through the hub's ``jobs`` service."""

    @line_magic
    def schedule(self, line: str) -> Any:
        """Schedule this notebook, and list, run, pause and delete jobs;
        ``%schedule --help`` lists the options and commands.

        Examples::

            %schedule --cron "0 6 * * *" -p alpha=0.5
            %schedule list
            %schedule output 17
        """
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise UsageError(f"{e}\n{USAGE}") from None
        if not words or words[0] in ("-h", "--help", "help"):
            print(USAGE, end="")
            return None
        command = words[0] if words and words[0] in COMMANDS else None
        try:
            if command is None:
                args = make_schedule_parser().parse_args(words)
            else:
                args = make_command_parser().parse_args(words)
        except HelpShown:
            return None
        from ..client import ServiceError

        try:
            return getattr(self, f"_{command or 'create'}")(args)
        except (ServiceError, ValueError, FileNotFoundError, FileExistsError, TimeoutError) as e:
            # UsageError shows just the message: the traceback would only show our frames.
            raise UsageError(getattr(e, "message", None) or str(e)) from None

    # --- the commands -----------------------------------------------------------------

    def _create(self, args: argparse.Namespace) -> None:
        from . import client

        job = client.schedule(
            args.notebook, name=args.name, cron=args.cron, timezone=args.timezone,
            once=args.once, watch=args.watch, watch_parameter=args.watch_parameter,
            parameters=dict(args.parameters) or None, profile=args.profile,
            timeout=args.timeout, retries=args.retries, retry_backoff=args.retry_backoff,
            missed=args.missed, notify_url=args.notify_url, notify_on=args.notify_on,
            keep_runs=args.keep_runs, keep_days=args.keep_days, paused=args.paused)
        when = describe_trigger(job.get("trigger"))
        paused = ", paused" if job.get("paused") else ""
        print(f"Job {job['id']} {job.get('name', '')!r} scheduled: {when}{paused}.")

    def _list(self, args: argparse.Namespace) -> Any:
        from . import client

        jobs = client.list_jobs(all_users=args.all)
        if not jobs:
            print("No jobs.")
            return None
        import pandas as pd

        rows = [{**j, "trigger": describe_trigger(j.get("trigger")),
                 "last_run": (j.get("last_run") or {}).get("status")} for j in jobs]
        columns = list(JOB_COLUMNS) + (["owner"] if args.all else [])
        return pd.DataFrame(rows, columns=columns)

    def _runs(self, args: argparse.Namespace) -> Any:
        from . import client

        found = client.runs(args.job, status=args.status, limit=args.limit)
        if not found:
            print("No runs.")
            return None
        import pandas as pd

        rows = [{**r, "progress": _progress(r)} for r in found]
        return pd.DataFrame(rows, columns=list(RUN_COLUMNS))

    def _run(self, args: argparse.Namespace) -> None:
        from . import client

        run = client.run_now(args.job, parameters=dict(args.parameters) or None)
        print(f"Run {run['id']} of job {run.get('job_name', args.job)!r}: {run.get('status')}.")
        if args.wait:
            run = client.wait(run["id"])
            reason = f" ({run['reason']})" if run.get("reason") else ""
            print(f"Run {run['id']}: {run.get('status')}{reason}.")

    def _pause(self, args: argparse.Namespace) -> None:
        from . import client

        job = client.pause(args.job)
        print(f"Job {job['id']} {job.get('name', '')!r} paused.")

    def _resume(self, args: argparse.Namespace) -> None:
        from . import client

        job = client.resume(args.job)
        next_run = f"; next run {job['next_run']}" if job.get("next_run") else ""
        print(f"Job {job['id']} {job.get('name', '')!r} resumed{next_run}.")

    def _delete(self, args: argparse.Namespace) -> None:
        from . import client

        client.delete(args.job)
        print(f"Job {args.job!r} deleted.")

    def _cancel(self, args: argparse.Namespace) -> None:
        from . import client

        run = client.cancel(args.run)
        print(f"Run {run['id']}: {run.get('status')}.")

    def _output(self, args: argparse.Namespace) -> None:
        from . import client

        path = client.output(args.run, args.path, overwrite=args.overwrite)
        print(f"Run {args.run}'s output notebook saved to {path}")

    def _log(self, args: argparse.Namespace) -> None:
        from . import client

        print(client.log(args.run), end="")

    def _widget(self, args: argparse.Namespace) -> Any:
        from .widgets import JobsWidget

        return JobsWidget()


def _progress(run: dict[str, Any]) -> str:
    progress = run.get("progress") or {}
    if run.get("status") == "running" and progress.get("cells"):
        return f"cell {progress.get('cell') or 0}/{progress['cells']}"
    return ""
