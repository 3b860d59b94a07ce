"""The ``hubforge`` command.

``hubforge up`` starts the platform on the embedded default, ``hubforge profiles check``
validates profile files, ``hubforge token`` makes an API token for automation,
``hubforge jobs`` manages scheduled notebooks, and ``hubforge config-reference`` prints
every setting. Each subcommand has ``--help``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .exceptions import HubForgeError
from .helm.cli import register as register_helm_values
from .images.cli import register as register_images
from .jobs.cli import add_jobs_parser
from .models.cli import add_models_parser
from .settings import REPO_ROOT, Settings

HUB_CONFIG = REPO_ROOT / "hub_config" / "jupyterhub_config.py"


def _settings(args) -> Settings:
    if args.settings:
        os.environ["HUBFORGE_SETTINGS"] = str(Path(args.settings).resolve())
    return Settings.load()


def _hub_env(settings: Settings) -> dict:
    env = dict(os.environ)
    env["HUBFORGE_SETTINGS"] = settings.source
    # The hub, its services and the servers it spawns use this environment's tools.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def cmd_up(args) -> int:
    """Start the hub (and its proxy and services) in the foreground."""
    from .hub.config import public_url
    from .hub.proxy import ensure_proxy
    from .profiles import load_profiles

    settings = _settings(args)
    if args.admin:
        admins = sorted(set(settings.admin_users) | set(args.admin))
        os.environ["HUBFORGE_ADMIN_USERS"] = ",".join(admins)
        settings.admin_users = admins
    load_profiles([str(settings.resolve_path(p)) for p in settings.profiles])
    ensure_proxy(settings.proxy)
    print(
        f"HubForge starting at {public_url(settings)} (mode {settings.mode}); "
        f"first admin(s): {', '.join(settings.admin_users) or 'none'} — sign up at "
        f"{public_url(settings)}hub/signup",
        file=sys.stderr,
    )
    argv = [os.path.join(os.path.dirname(sys.executable), "jupyterhub"), "-f", str(HUB_CONFIG)]
    if args.debug:
        argv.append("--debug")
    env = _hub_env(settings)
    os.chdir(settings.resolve_path(settings.data_dir).parent)
    os.execve(argv[0], argv, env)


def cmd_profiles_check(args) -> int:
    """Validate profile files; print every problem with file, line, profile and field."""
    from .profiles import check_files

    issues = check_files(args.paths)
    for issue in issues:
        print(issue)
    if issues:
        print(f"{len(issues)} problem(s) found", file=sys.stderr)
        return 1
    print(f"OK: {', '.join(args.paths)}")
    return 0


def cmd_token(args) -> int:
    """Print a new API token for a hub user (for scripts and CI)."""
    settings = _settings(args)
    argv = [os.path.join(os.path.dirname(sys.executable), "jupyterhub"), "token", "-f", str(HUB_CONFIG),
            "--log-level=WARN"]
    argv.append(args.name)
    proc = subprocess.run(argv, env=_hub_env(settings), capture_output=True, text=True,
                          cwd=settings.resolve_path(settings.data_dir).parent, timeout=120)
    token = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    if proc.returncode != 0 or not token:
        msg = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        print(f"hubforge token: could not create a token for {args.name!r}: {msg}", file=sys.stderr)
        return 1
    print(token[0])
    return 0


def cmd_config_reference(args) -> int:
    """Print the settings reference (Markdown), generated from the traits' help."""
    from .reference import settings_reference

    print(settings_reference(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubforge",
        description="HubForge: a JupyterHub-based notebook platform.",
    )
    parser.add_argument("--settings", help="platform settings file (default: hub_config/hubforge.yaml "
                        "or $HUBFORGE_SETTINGS)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    up = sub.add_parser("up", help="start the platform (hub, proxy, services) in the foreground",
                        description=cmd_up.__doc__)
    up.add_argument("--admin", action="append", default=[], metavar="NAME",
                    help="make NAME an admin (repeatable); sign up with that name at /hub/signup")
    up.add_argument("--debug", action="store_true", help="debug logging")
    up.set_defaults(func=cmd_up)

    profiles = sub.add_parser("profiles", help="spawner profiles", description="Spawner profile tools.")
    psub = profiles.add_subparsers(dest="profiles_command", metavar="COMMAND", required=True)
    check = psub.add_parser("check", help="validate profile files", description=cmd_profiles_check.__doc__)
    check.add_argument("paths", nargs="+", metavar="PATH", help="profile file or directory")
    check.set_defaults(func=cmd_profiles_check)

    token = sub.add_parser("token", help="create an API token for a user", description=cmd_token.__doc__)
    token.add_argument("name", help="hub user name (must exist, e.g. signed up)")
    token.set_defaults(func=cmd_token)

    register_helm_values(sub)
    register_images(sub)
    add_jobs_parser(sub)
    add_models_parser(sub)

    ref = sub.add_parser("config-reference", help="print the settings reference",
                         description=cmd_config_reference.__doc__)
    ref.set_defaults(func=cmd_config_reference)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except HubForgeError as e:
        print(f"hubforge: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
