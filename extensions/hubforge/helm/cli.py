"""The ``hubforge helm-values`` command: write or check ``helm-values/``.

The main CLI adds it with :func:`register`::

    sub = parser.add_subparsers(...)
    helm.cli.register(sub)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..settings import REPO_ROOT, Settings

DEFAULT_OUTPUT_DIR = REPO_ROOT / "helm-values"


def cmd_helm_values(args: argparse.Namespace) -> int:
    """Generate Helm values for Zero to JupyterHub and dask-gateway, and the jobs and
    models services' RBAC manifests, from the profiles and the platform settings; with
    --check, list stale files and exit 1 instead."""
    from .values import stale_files, write

    settings = Settings.load(getattr(args, "settings", None))
    output_dir = Path(args.output_dir)
    if args.check:
        stale = stale_files(settings, output_dir)
        for path in stale:
            print(f"stale: {path}")
        if stale:
            print(f"{len(stale)} file(s) out of date; run: hubforge helm-values --output-dir {output_dir}",
                  file=sys.stderr)
            return 1
        print(f"up to date: {output_dir}")
        return 0
    for path in write(settings, output_dir):
        print(f"wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``helm-values`` subcommand to the main parser's subparsers."""
    parser = subparsers.add_parser(
        "helm-values",
        help="generate Helm values for Kubernetes (Zero to JupyterHub, dask-gateway)",
        description=cmd_helm_values.__doc__,
    )
    parser.add_argument(
        "--output-dir", default=str(DEFAULT_OUTPUT_DIR), metavar="DIR",
        help="where to write jupyterhub.yaml, dask-gateway.yaml, jobs-rbac.yaml and models-rbac.yaml "
        f"(default: {DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="write nothing; exit 1 listing the files that differ from freshly generated ones",
    )
    parser.set_defaults(func=cmd_helm_values)
    return parser
