"""What every ``hubforge <service>`` command group shares (``hubforge jobs``, ``hubforge models``).

A capability's CLI (``jobs/cli.py``, ``models/cli.py``) is a set of commands, each one or
a few calls to its hub service's REST API through `hubforge.client.ServiceClient`. This
module holds the parts that are the same for every such service, so that they find the
service, fail and print the same way:

* **Where the service is**: ``--hub-url`` (the hub's public URL, prefix included),
  reached through the hub's proxy at ``<hub-url>services/<service>/``. Without it, inside
  a user server (where JupyterHub sets ``JUPYTERHUB_SERVICE_PREFIX``) the service is
  looked up through the hub API at ``$JUPYTERHUB_API_URL``, because there that URL is the
  hub's internal address, which does not route ``/services/``; elsewhere
  ``$JUPYTERHUB_API_URL`` without its ``hub/api`` names the hub; else
  ``http://127.0.0.1:8000/``. The token is ``--token``, else ``$JUPYTERHUB_API_TOKEN``,
  else ``$HUBFORGE_TOKEN``; it is never printed. See `make_client`.
* **How a command fails**: it raises `OptionError` (options that cannot make a request)
  or `CommandError` (anything else, with the HTTP status when there is one), or the
  client raises `~hubforge.client.ServiceError`; `wrap_command` turns each into one line
  ``hubforge <service>: error: <message> (HTTP <status>)`` on stderr and exit status 1.
* **Output**: aligned tables (`table`) with local times (`local_time`), or the service's
  JSON (`print_json`) with ``--json`` (`connection_options`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .client import ServiceClient, ServiceError

#: The hub's URL when neither ``--hub-url`` nor ``$JUPYTERHUB_API_URL`` is given.
DEFAULT_HUB_URL = "http://127.0.0.1:8000/"
#: Seconds one request may take, unless a command says otherwise.
REQUEST_TIMEOUT = 30.0


class CommandError(Exception):
    """A command cannot go on; ``str()`` is the message for the user, ``status`` the
    HTTP status when the service gave one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.status = status


class OptionError(ValueError):
    """Options or arguments that cannot make a request together (``--timezone`` without a
    cron, a bad name, an unreadable file)."""


# --- finding the service ------------------------------------------------------------------


def hub_url_from_api_url(api_url: str) -> str:
    """The hub's URL from ``JUPYTERHUB_API_URL``: ``http://h/prefix/hub/api`` -> ``http://h/prefix/``."""
    url = api_url.rstrip("/")
    if url.endswith("/hub/api"):
        url = url[: -len("hub/api")]
    return url if url.endswith("/") else url + "/"


def service_url(hub_url: str, service: str) -> str:
    """A hub service through the hub's proxy: ``<hub-url>services/<service>/``."""
    return (hub_url if hub_url.endswith("/") else hub_url + "/") + f"services/{service}/"


def make_client(service: str, hub_url: str | None, token: str | None, environ: Mapping[str, str] | None = None,
                timeout: float = REQUEST_TIMEOUT) -> ServiceClient:
    """The client for the hub service ``service`` (see the module docstring for the defaults);
    CommandError when there is no token."""
    environ = os.environ if environ is None else environ
    token = token or environ.get("JUPYTERHUB_API_TOKEN") or environ.get("HUBFORGE_TOKEN")
    if not token:
        raise CommandError("no API token: give --token, or set $JUPYTERHUB_API_TOKEN or $HUBFORGE_TOKEN "
                           "(`hubforge token NAME` makes one)")
    api_url = environ.get("JUPYTERHUB_API_URL", "")
    if not hub_url and api_url and environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        return ServiceClient(service, api_url=api_url, token=token, timeout=timeout, environ=environ)
    hub_url = hub_url or (hub_url_from_api_url(api_url) if api_url else DEFAULT_HUB_URL)
    return ServiceClient(service, url=service_url(hub_url, service), token=token, timeout=timeout, environ=environ)


# --- arguments -----------------------------------------------------------------------------


def count(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number, at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def connection_options(parser: argparse.ArgumentParser, default: Any, json_option: bool = True) -> None:
    """``--hub-url``, ``--token`` and (with ``json_option``) ``--json``, on a command group
    and (with ``default`` SUPPRESS, so that they do not reset what was given before the
    command) on each of its commands."""
    group = parser.add_argument_group("connection")
    group.add_argument("--hub-url", metavar="URL", default=default,
                       help="the hub's URL, base URL included (default: from $JUPYTERHUB_API_URL, "
                            f"else {DEFAULT_HUB_URL})")
    group.add_argument("--token", metavar="TOKEN", default=default,
                       help="hub API token (default: $JUPYTERHUB_API_TOKEN, else $HUBFORGE_TOKEN; "
                            "prefer those: a command line is visible to other users of the machine)")
    if json_option:
        group.add_argument("--json", action="store_true", default=default if default is not None else False,
                           help="print the service's JSON instead of tables")


# --- output --------------------------------------------------------------------------------


def local_time(value: str | None) -> str:
    """An ISO 8601 time from a service as local time, ``2026-11-27 07:00:00``."""
    if not value:
        return ""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: Any, width: int = 60) -> str:
    """``text`` (None: empty) on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(str(text if text is not None else "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Aligned columns, two spaces apart, with a header line."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def confirm_delete(what: str, question: str | None = None) -> bool:
    """Ask on the terminal before deleting ``what`` (``question``, default ``Delete <what>?``);
    False, with ``not deleted`` on stderr, unless the answer is yes. OptionError when
    there is no terminal to ask (the command's ``--yes`` skips the question)."""
    if not sys.stdin.isatty():
        raise OptionError(f"not deleting {what} without --yes (there is no terminal to ask)")
    answer = input(f"{question or f'Delete {what}?'} [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        print("not deleted", file=sys.stderr)
        return False
    return True


# --- running a command ---------------------------------------------------------------------


def wrap_command(func: Callable[[ServiceClient, argparse.Namespace], int], *, prog: str,
                 connect: Callable[[str | None, str | None], ServiceClient]) -> Callable[[argparse.Namespace], int]:
    """``func`` with the client made by ``connect(hub_url, token)`` from the connection
    options, and every expected failure turned into one line ``<prog>: error: ...`` on
    stderr and exit status 1 (130 for Ctrl-C)."""

    def error(message: str, status: int | None = None) -> int:
        suffix = f" (HTTP {status})" if status is not None else ""
        print(f"{prog}: error: {message}{suffix}", file=sys.stderr)
        return 1

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            client = connect(args.hub_url, args.token)
            return func(client, args)
        except (ServiceError, CommandError) as e:
            return error(e.message, e.status)
        except OptionError as e:
            return error(str(e))
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130

    return run


class CommandGroup:
    """``hubforge <name>`` and its commands, each a function ``(client, args) -> exit status``.

    The connection options (`connection_options`) go on the group and on each command,
    so they are accepted before or after the command's name; a command's ``--help``
    shows its function's docstring; each runs through `wrap_command` with the client
    ``connect(hub_url, token)`` makes::

        group = CommandGroup(subparsers, "jobs", connect=make_client, help="...", description="...")
        p = group.add("list", cmd_list, "list your jobs")
        p.add_argument("--all", action="store_true", help="everyone's jobs (admins)")
    """

    def __init__(self, subparsers: Any, name: str, *, connect: Callable[[str | None, str | None], ServiceClient],
                 help: str, description: str):
        self.prog = f"hubforge {name}"
        self.connect = connect
        self.parser = subparsers.add_parser(name, help=help, description=description)
        connection_options(self.parser, None)
        #: The parent parser of every command: the connection options.
        self.common = argparse.ArgumentParser(add_help=False)
        connection_options(self.common, argparse.SUPPRESS)
        self.commands = self.parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)

    def add(self, name: str, func: Callable[[ServiceClient, argparse.Namespace], int], help: str,
            where: Any = None, parent: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
        """Add the command ``name`` running ``func``, to the group or to the subparsers
        ``where`` (a nested group), with the options of ``parent`` (default `common`)."""
        parser = (where or self.commands).add_parser(name, help=help, description=func.__doc__,
                                                      parents=[parent or self.common])
        parser.set_defaults(func=wrap_command(func, prog=self.prog, connect=self.connect))
        return parser
