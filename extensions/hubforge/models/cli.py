"""``hubforge models``: the model registry and served models from a shell or CI.

Each command is one or a few calls to the ``models`` hub service's REST API
(docs/models.md), through the same functions a notebook uses
(:mod:`hubforge.models.client`) where they fit::

    hubforge models publish churn ./churn-model --alias staging
    hubforge models list
    hubforge models promote churn 3                  # production -> version 3
    hubforge models canary churn 4 --percent 10      # 10% of production's traffic to 4
    hubforge models predict churn --json '{"dataframe_records": [{"x": 1.5}]}'
    hubforge models rollback churn

Where the service is: ``--hub-url`` (the hub's public URL, prefix included), reached
through the hub's proxy at ``<hub-url>services/models/``, else found from the environment
as :mod:`hubforge.clitools` describes (the same rules as ``hubforge jobs``). The token is
``--token``, else ``$JUPYTERHUB_API_TOKEN``, else ``$HUBFORGE_TOKEN``; it is never printed.

Output is aligned tables with local times, or the service's JSON with ``--json``. A
failure prints ``hubforge models: error: <message> (HTTP <status>)`` on stderr and exits
with 1.

``predict`` takes its request body as ``--json BODY`` (so that ``--json`` reads "JSON in,
JSON out" there) or ``--file FILE``; ``--json`` alone, as everywhere, asks for JSON output.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import clitools
from ..client import ServiceClient
from ..clitools import OptionError, confirm_delete, local_time, one_line, print_json, table
from . import client as models
from .settings import MODEL_NAME

#: The hub service's name.
SERVICE = "models"
#: Seconds one request may take. Commands that make the service load a version first
#: (publish, promote, rollback, canary, a predict that finds its version unloaded) use
#: `LOAD_TIMEOUT`.
REQUEST_TIMEOUT = 30.0
LOAD_TIMEOUT = models.PUBLISH_TIMEOUT
DEFAULT_ALIAS = models.DEFAULT_ALIAS


# --- arguments and request bodies (pure) -------------------------------------------------


def model_name(text: str) -> str:
    """A model name as the service accepts it. An argparse ``type``."""
    if not MODEL_NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a model name: 1 to 63 lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit")
    return text


version_number = clitools.count(1)


def percent(text: str) -> float:
    """A canary's share of traffic, 0 to 100. An argparse ``type``."""
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage from 0 to 100, got {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage from 0 to 100, got {text!r}")
    return value


def predict_body(text: str, source: str = "--json") -> dict[str, Any]:
    """The body of ``POST <name>/predict`` from the text given: a JSON object as the
    service takes it (``{"dataframe_records": [...]}``, ``dataframe_split``, ``columns``,
    ``inputs``), or a bare list of records, sent as ``dataframe_records``."""
    try:
        body = json.loads(text)
    except ValueError as e:
        raise OptionError(f"{source}: not valid JSON ({e})") from None
    if isinstance(body, list):
        return {"dataframe_records": body}
    if not isinstance(body, dict):
        raise OptionError(f'{source}: expected a JSON object such as {{"dataframe_records": [...]}} or a list '
                          "of records")
    return body


def read_body(file: str) -> dict[str, Any]:
    """`predict_body` of a file's text (``-``: standard input)."""
    if file == "-":
        return predict_body(sys.stdin.read(), "--file -")
    path = Path(file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise OptionError(f"cannot read {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    return predict_body(text, f"--file {file}")


def sharing_body(users: Iterable[str] | None, groups: Iterable[str] | None,
                 services: Iterable[str] | None) -> dict[str, list[str]]:
    """The body of ``PUT api/models/<name>/sharing`` (it replaces the lists; none: private)."""
    def clean(values):
        return sorted({v.strip() for v in values or () if v.strip()})

    return {"users": clean(users), "groups": clean(groups), "services": clean(services)}


def check_model_dir(path: str) -> Path:
    """`path` if it is an MLflow model directory (it holds ``MLmodel``), else OptionError."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise OptionError(f"{str(folder)!r} is not a directory: give the folder an MLflow model was saved to "
                          "(mlflow.*.save_model or hubforge.models.save)")
    if not (folder / "MLmodel").is_file():
        raise OptionError(f"{str(folder)!r} holds no MLmodel file: it is not an MLflow model directory")
    return folder


def service_url(hub_url: str) -> str:
    """The models service through the hub's proxy: ``<hub-url>services/models/``."""
    return clitools.service_url(hub_url, SERVICE)


def make_client(hub_url: str | None, token: str | None, environ: Mapping[str, str] | None = None,
                timeout: float = REQUEST_TIMEOUT) -> ServiceClient:
    """The client for the models service (see `hubforge.clitools.make_client`)."""
    return clitools.make_client(SERVICE, hub_url, token, environ, timeout)


# --- formatting (pure) -------------------------------------------------------------------


def epoch_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S")


def format_size(size: int | None) -> str:
    """``812 B``, ``3.4 KiB``, ``12.0 MiB``."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def format_ms(value: float | None) -> str:
    return "" if value is None else f"{value:g} ms"


def format_alias(model: Mapping[str, Any], alias: str) -> str:
    """``production: v3`` or, with a canary, ``production: v3 (90%) / v4 (10%)``."""
    version = (model.get("aliases") or {}).get(alias)
    canary = (model.get("canaries") or {}).get(alias)
    if not canary:
        return f"{alias}: v{version}"
    share = float(canary.get("percent") or 0)
    return f"{alias}: v{version} ({100 - share:g}%) / v{canary.get('version')} ({share:g}%)"


def format_aliases(model: Mapping[str, Any]) -> str:
    return ", ".join(format_alias(model, alias) for alias in sorted(model.get("aliases") or {}))


def format_default(model: Mapping[str, Any]) -> str:
    """Where ``<name>/predict`` goes: ``production (v3)`` or ``latest (v2)``."""
    default = model.get("default") or {}
    version = default.get("version")
    if version is None:
        return ""
    return f"{default.get('alias') or 'latest'} (v{version})"


def format_sharing(shared: Mapping[str, Any] | None) -> str:
    """``users a, b; groups g`` or ``private``."""
    parts = [f"{kind} {', '.join(names)}" for kind, names in (shared or {}).items() if names]
    return "; ".join(parts) or "private"


def format_loaded(loaded: Mapping[str, str] | None) -> str:
    """``v2 ready, v3 loading``."""
    items = sorted((loaded or {}).items(), key=lambda item: int(item[0]) if str(item[0]).isdigit() else 0)
    return ", ".join(f"v{version} {state}" for version, state in items)


def models_table(items: Sequence[Mapping[str, Any]], owners: bool = False) -> str:
    headers = ["NAME", *(["OWNER"] if owners else []), "LATEST", "VERSIONS", "DEFAULT", "ALIASES", "LOADED",
               "SHARED WITH", "UPDATED"]
    rows = [[
        m.get("name", ""), *([m.get("owner", "")] if owners else []),
        f"v{m['latest_version']}" if m.get("latest_version") is not None else "", m.get("versions", ""),
        format_default(m), format_aliases(m), format_loaded(m.get("loaded")), format_sharing(m.get("shared_with")),
        local_time(m.get("updated")),
    ] for m in items]
    return table(headers, rows)


def versions_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ["VERSION", "CREATED", "BY", "SIZE", "FLAVOURS", "STATE", "DESCRIPTION", "ERROR"]
    rows = [[
        f"v{v.get('version')}", local_time(v.get("created")), v.get("created_by", ""), format_size(v.get("size")),
        ", ".join(v.get("flavors") or []), v.get("state", ""), one_line(v.get("description"), 40),
        one_line(v.get("error")),
    ] for v in sorted(items, key=lambda v: v.get("version") or 0, reverse=True)]
    return table(headers, rows)


def history_table(events: Sequence[Mapping[str, Any]]) -> str:
    def version(value):
        return "" if value is None else f"v{value}"

    headers = ["AT", "ALIAS", "ACTION", "FROM", "TO", "BY"]
    rows = [[local_time(e.get("at")), e.get("alias", ""), e.get("action", ""), version(e.get("before")),
             version(e.get("after")), e.get("by", "")] for e in events]
    return table(headers, rows)


def model_details(model: Mapping[str, Any]) -> str:
    """``hubforge models show``: one field a line, then the versions and alias history."""
    endpoints = [model.get("endpoint", "")]
    endpoints += [f"{url}  ({alias})" for alias, url in sorted((model.get("alias_endpoints") or {}).items())]
    fields = [
        ("name", model.get("name")),
        ("owner", model.get("owner")),
        ("description", model.get("description")),
        ("latest", f"v{model['latest_version']}" if model.get("latest_version") is not None else ""),
        ("default route", format_default(model)),
        ("aliases", format_aliases(model) or "none"),
        ("loaded", format_loaded(model.get("loaded")) or "none"),
        ("shared with", format_sharing(model.get("shared_with"))),
        ("endpoint", endpoints[0]),
        *(("", url) for url in endpoints[1:]),
        ("created", local_time(model.get("created"))),
        ("updated", local_time(model.get("updated"))),
    ]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name.ljust(width)}  {'' if value is None else value}".rstrip() for name, value in fields]
    if model.get("version_list"):
        lines += ["", "versions:", versions_table(model["version_list"])]
    if model.get("alias_history"):
        lines += ["", "alias history (newest first):", history_table(model["alias_history"][:10])]
    return "\n".join(lines)


def stats_summary(stats: Mapping[str, Any]) -> str:
    """``hubforge models stats``: the last minute, then one line per version over the window."""
    head = (f"last minute: {stats.get('rate', 0):g} requests/s, p50 {format_ms(stats.get('p50_ms')) or '-'}, "
            f"p99 {format_ms(stats.get('p99_ms')) or '-'}")
    series = stats.get("series") or []
    if not series:
        return head + "\nno requests in the window"
    rows = []
    for entry in series:
        points = entry.get("points") or []
        last = points[-1] if points else {}
        version = entry.get("version")
        rows.append([
            f"v{version}" if version else "unrouted", sum(p.get("requests", 0) for p in points),
            sum(p.get("errors", 0) for p in points), epoch_time(last["t"]) if "t" in last else "",
            f"{last.get('rate', 0):g}/s", format_ms(last.get("p50_ms")), format_ms(last.get("p99_ms")),
        ])
    note = (f"per version over the service's window; LAST, RATE, P50 and P99: the newest "
            f"{stats.get('interval', 5)}-second bucket with requests")
    return "\n".join([head, note, table(["VERSION", "REQUESTS", "ERRORS", "LAST", "RATE", "P50", "P99"], rows)])


def samples_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ["TIME", "VERSION", "ALIAS", "INPUT", "PREDICTION"]
    rows = [[local_time(s.get("time")), f"v{s.get('version')}", s.get("alias") or "",
             one_line(json.dumps(s.get("input"), default=str), 70), one_line(json.dumps(s.get("prediction"),
                                                                                         default=str), 30)]
            for s in items]
    return table(headers, rows)


# --- the commands ------------------------------------------------------------------------


def _alias(alias: str) -> str:
    return urllib.parse.quote(alias, safe="")


def _changed(args: argparse.Namespace, model: Mapping[str, Any], text: str) -> int:
    if args.json:
        print_json(model)
    else:
        print(text)
    return 0


def cmd_list(client: ServiceClient, args: argparse.Namespace) -> int:
    """List your models and those shared with you (admins: everyone's with --all): the
    latest version, where the default endpoint goes, aliases and canaries, what is loaded."""
    items = models.list_models(all_users=args.all, client=client)
    if args.json:
        print_json({"models": items})
    elif items:
        print(models_table(items, owners=args.all))
    else:
        print("no models" + ("" if args.all else " (hubforge models publish NAME DIR makes one)"))
    return 0


def cmd_show(client: ServiceClient, args: argparse.Namespace) -> int:
    """Show one model: owner, aliases and canaries, endpoints, sharing, its versions and
    the history of its aliases."""
    model = models.get_model(args.name, client=client)
    if args.json:
        print_json(model)
    else:
        print(model_details(model))
    return 0


def cmd_versions(client: ServiceClient, args: argparse.Namespace) -> int:
    """List a model's versions, newest first: when and by whom published, size, MLflow
    flavours, whether loaded, and the error of a version that failed."""
    items = models.versions(args.name, client=client)
    if args.json:
        print_json({"versions": items})
    else:
        print(versions_table(items))
    return 0


def cmd_publish(client: ServiceClient, args: argparse.Namespace) -> int:
    """Publish an MLflow model directory (one saved with mlflow.*.save_model or
    hubforge.models.save) as a new version of NAME, creating the model if it is new. The
    service loads the version before it answers: a model that cannot load there is refused
    (HTTP 422, with the loader's error) and nothing is published."""
    from .archive import pack

    folder = check_model_dir(args.path)
    blob = pack(folder)
    params = {"description": args.description or ""}
    if args.alias:
        params["alias"] = args.alias
    if not args.json:
        print(f"uploading {len(blob) / 2**20:.1f} MiB; the service loads the model", file=sys.stderr)
    version = client.request("POST", f"api/models/{args.name}/versions", params=params, data=blob,
                             content_type="application/gzip", timeout=LOAD_TIMEOUT)
    if args.json:
        print_json(version)
    else:
        where = f", alias {args.alias}" if args.alias else ""
        print(f"published {args.name} v{version.get('version')}{where}: {version.get('endpoint', '')}")
    return 0


def cmd_promote(client: ServiceClient, args: argparse.Namespace) -> int:
    """Point an alias (default production) at VERSION. The version is loaded first, so no
    request fails during the switch; the alias's canary, if any, ends."""
    model = models.promote(args.name, args.version, alias=_alias(args.alias), client=client)
    return _changed(args, model, f"{args.name} {format_alias(model, args.alias)}")


def cmd_rollback(client: ServiceClient, args: argparse.Namespace) -> int:
    """Point an alias (default production) back at the version it served before its last
    change (HTTP 409 when there is none)."""
    model = models.rollback(args.name, alias=_alias(args.alias), client=client)
    return _changed(args, model, f"{args.name} {format_alias(model, args.alias)} (rolled back)")


def cmd_alias_set(client: ServiceClient, args: argparse.Namespace) -> int:
    """Point ALIAS (e.g. staging) at VERSION; <name>@<alias>/predict then serves it."""
    model = models.set_alias(args.name, _alias(args.alias_name), args.version, client=client)
    return _changed(args, model, f"{args.name} {format_alias(model, args.alias_name)}")


def cmd_alias_delete(client: ServiceClient, args: argparse.Namespace) -> int:
    """Remove ALIAS; without production, <name>/predict serves the latest version."""
    models.delete_alias(args.name, _alias(args.alias_name), client=client)
    if args.json:
        print_json({"deleted": args.alias_name, "model": args.name})
    else:
        print(f"deleted alias {args.alias_name} of {args.name}")
    return 0


def cmd_canary(client: ServiceClient, args: argparse.Namespace) -> int:
    """Send --percent of an alias's requests (default production) to VERSION, the rest to
    the version the alias points at. Promote VERSION to finish, canary-end to stop."""
    model = models.canary(args.name, args.version, percent=args.percent, alias=_alias(args.alias), client=client)
    return _changed(args, model, f"{args.name} {format_alias(model, args.alias)}")


def cmd_canary_end(client: ServiceClient, args: argparse.Namespace) -> int:
    """End an alias's canary (default production): all its requests go to the version it
    points at again."""
    model = models.end_canary(args.name, alias=_alias(args.alias), client=client)
    return _changed(args, model, f"{args.name} {format_alias(model, args.alias)} (canary ended)")


def cmd_share(client: ServiceClient, args: argparse.Namespace) -> int:
    """Let these users, members of these groups and these hub services call the model.
    The lists replace the current ones: with no option the model is private again."""
    body = sharing_body(args.user, args.group, args.service)
    model = models.share(args.name, client=client, **body)
    return _changed(args, model, f"{args.name} shared with: {format_sharing(model.get('shared_with'))}")


def cmd_predict(client: ServiceClient, args: argparse.Namespace) -> int:
    """Call the served model: the default route (production, else the latest version),
    an alias with --alias, or a version with --alias v3. The body is
    {"dataframe_records": [...]} (or dataframe_split, columns, inputs), or a list of records."""
    given = args.json if isinstance(args.json, str) else None
    if (given is None) == (args.file is None):
        raise OptionError("give the request body with --json BODY or --file FILE (one of them)")
    body = predict_body(given) if given is not None else read_body(args.file)
    target = f"{args.name}@{_alias(args.alias)}" if args.alias else args.name
    answer = client.request("POST", f"{target}/predict", body, timeout=LOAD_TIMEOUT)
    if args.json:
        print_json(answer)
    else:
        for prediction in (answer or {}).get("predictions", []):
            print(prediction if isinstance(prediction, str) else json.dumps(prediction))
    return 0


def cmd_samples(client: ServiceClient, args: argparse.Namespace) -> int:
    """The newest sampled requests of a model you own: input (first row), prediction,
    version and alias. The first 20 requests of each version are always kept."""
    items = models.samples(args.name, limit=args.limit, client=client)
    if args.json:
        print_json({"samples": items})
    elif items:
        print(samples_table(items))
    else:
        print("no samples yet")
    return 0


def cmd_stats(client: ServiceClient, args: argparse.Namespace) -> int:
    """Request rate and latency of a model: the last minute, and per version over the
    service's window (version 'unrouted': requests refused before reaching one)."""
    stats = models.stats(args.name, client=client)
    if args.json:
        print_json(stats)
    else:
        print(stats_summary(stats))
    return 0


def cmd_delete(client: ServiceClient, args: argparse.Namespace) -> int:
    """Delete a model with every version and its endpoints, or with --version one version
    (not one an alias or canary points at, nor the only one)."""
    model = models.get_model(args.name, client=client)  # a clear 404 before asking
    what = f"version {args.version} of model {args.name}" if args.version else \
        f"model {args.name} with its {model.get('versions')} version(s) and endpoints"
    if not args.yes and not confirm_delete(what):
        return 1
    if args.version:
        models.delete_version(args.name, args.version, client=client)
    else:
        models.delete(args.name, client=client)
    if args.json:
        print_json({"deleted": args.name, **({"version": args.version} if args.version else {})})
    else:
        print(f"deleted {what}")
    return 0


# --- the parser --------------------------------------------------------------------------


def add_models_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``models`` and its commands to ``hubforge``'s subparsers; returns the ``models`` parser."""
    group = clitools.CommandGroup(
        subparsers, "models", connect=make_client,
        help="published models: publish, list, promote, canary, roll back, call them",
        description="Published models and their endpoints, through the hub's models service (see "
                    "docs/models.md). NAME is a model's name, VERSION a version number.",
    )
    command = group.add
    # predict's --json also takes the request body (see the module docstring).
    no_json = argparse.ArgumentParser(add_help=False)
    clitools.connection_options(no_json, argparse.SUPPRESS, json_option=False)

    def name_argument(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME", type=model_name, help="the model's name")

    def alias_option(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--alias", default=DEFAULT_ALIAS, metavar="ALIAS",
                       help=f"the alias {what} (default {DEFAULT_ALIAS})")

    p = command("list", cmd_list, "list your models")
    p.add_argument("--all", action="store_true", help="everyone's models (admins)")

    p = command("show", cmd_show, "show a model, its versions and alias history")
    name_argument(p)

    p = command("versions", cmd_versions, "list a model's versions")
    name_argument(p)

    p = command("publish", cmd_publish, "publish an MLflow model directory as a new version")
    name_argument(p)
    p.add_argument("path", metavar="PATH", help="the MLflow model directory (it holds MLmodel)")
    p.add_argument("--alias", metavar="ALIAS", help="point this alias (e.g. staging) at the new version")
    p.add_argument("--description", metavar="TEXT", help="what is new in this version")

    p = command("promote", cmd_promote, "point an alias (production) at a version")
    name_argument(p)
    p.add_argument("version", metavar="VERSION", type=version_number, help="the version number")
    alias_option(p, "to point at VERSION")

    p = command("rollback", cmd_rollback, "point an alias back at its previous version")
    name_argument(p)
    alias_option(p, "to roll back")

    alias = group.commands.add_parser("alias", help="set or delete an alias", parents=[group.common],
                                description="Aliases name versions: <name>@<alias>/predict serves the "
                                            "version an alias points at. 'production' is the default route.")
    alias_commands = alias.add_subparsers(dest="alias_command", metavar="COMMAND", required=True)
    p = command("set", cmd_alias_set, "point an alias at a version", where=alias_commands)
    name_argument(p)
    p.add_argument("alias_name", metavar="ALIAS", help="the alias, e.g. staging")
    p.add_argument("version", metavar="VERSION", type=version_number, help="the version number")
    p = command("delete", cmd_alias_delete, "delete an alias", where=alias_commands)
    name_argument(p)
    p.add_argument("alias_name", metavar="ALIAS", help="the alias")

    p = command("canary", cmd_canary, "send a share of an alias's traffic to a version")
    name_argument(p)
    p.add_argument("version", metavar="VERSION", type=version_number, help="the canary version")
    p.add_argument("--percent", type=percent, required=True, metavar="P",
                   help="the share of the alias's requests VERSION gets, 0 to 100")
    alias_option(p, "whose traffic is split")

    p = command("canary-end", cmd_canary_end, "end an alias's canary")
    name_argument(p)
    alias_option(p, "whose canary ends")

    p = command("share", cmd_share, "let users, groups or services call a model")
    name_argument(p)
    p.add_argument("--user", action="append", metavar="USER", help="a hub user (repeatable)")
    p.add_argument("--group", action="append", metavar="GROUP", help="a hub group (repeatable)")
    p.add_argument("--service", action="append", metavar="SERVICE", help="a hub service (repeatable)")

    p = command("predict", cmd_predict, "call a served model", parent=no_json)
    name_argument(p)
    p.add_argument("--alias", metavar="ALIAS", help="an alias, or v<N> for a version (default: the default route)")
    p.add_argument("--json", nargs="?", const=True, default=argparse.SUPPRESS, metavar="BODY",
                   help='the request body, e.g. \'{"dataframe_records": [{"x": 1}]}\' (the answer is then '
                        "printed as JSON); without BODY: print the JSON answer")
    p.add_argument("--file", metavar="FILE", help="read the request body from FILE (- for standard input)")

    p = command("samples", cmd_samples, "show sampled requests and predictions")
    name_argument(p)
    p.add_argument("--limit", type=clitools.count(1), default=20, metavar="N", help="at most N samples (default 20)")

    p = command("stats", cmd_stats, "show request rate and latency per version")
    name_argument(p)

    p = command("delete", cmd_delete, "delete a model or one version")
    name_argument(p)
    p.add_argument("--version", type=version_number, metavar="N", help="delete only version N")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    return group.parser
