"""A Debian base image made on this machine, for builds that reach no image registry.

`build_base` runs ``debootstrap --variant=minbase`` for Debian bookworm with Python
and its venv module into a directory under the cache, trims apt's caches, and feeds
the tree to ``podman import`` (or ``docker import``) as `LOCAL_BASE_IMAGE`. The CPU
image builds on it exactly as on ``python:3.11-slim-bookworm``: both are bookworm
with Python 3.11, and the Containerfile only needs ``python3 -m venv``.

Needs root (debootstrap creates device nodes and chroots) and Debian's archive. An
existing image is kept unless ``force`` is set; the downloaded packages stay in the
cache, so a forced rebuild downloads nothing new.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import ImageBuildError
from .build import engine_env, image_info

log = logging.getLogger(__name__)

LOCAL_BASE_IMAGE = "localhost/hubforge-base:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: On top of minbase (essential packages and apt): Python, venv (it brings pip for
#: ``python3 -m venv``), CA certificates for pip, and useradd.
PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd")

DEBOOTSTRAP_TIMEOUT = 1800
IMPORT_TIMEOUT = 600

# Image settings that `podman import` would otherwise leave empty: a Containerfile's
# ENV PATH=...:${PATH} needs PATH to be set in the base.
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
    "LABEL org.opencontainers.image.title=hubforge-base",
    f'LABEL org.opencontainers.image.description="Debian {SUITE} minbase with {" ".join(PACKAGES)} (debootstrap)"',
)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hubforge`` (default ``~/.cache/hubforge``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "hubforge"


def debootstrap_command(
    rootfs: Path,
    *,
    suite: str = SUITE,
    mirror: str = MIRROR,
    packages: tuple[str, ...] = PACKAGES,
    debs: Path | None = None,
) -> list[str]:
    """The debootstrap command line; ``debs`` keeps the downloaded packages."""
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}"]
    if debs is not None:
        argv.append(f"--cache-dir={debs}")
    return [*argv, suite, str(rootfs), mirror]


def import_command(engine: str, image: str) -> list[str]:
    """``<engine> import`` of a root file system tar read from stdin."""
    argv = [engine, "import"]
    for change in IMPORT_CHANGES:
        argv += ["--change", change]
    return [*argv, "-", image]


def _trim(rootfs: Path) -> None:
    """Drop apt's package cache and lists: ~100 MB that any ``apt-get update`` remakes."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / sub).glob("*"):
            if entry.is_file():
                entry.unlink()


def build_base(
    *,
    engine: str,
    image: str = LOCAL_BASE_IMAGE,
    suite: str = SUITE,
    mirror: str = MIRROR,
    force: bool = False,
    cache: Path | None = None,
) -> bool:
    """Bootstrap Debian and import it as ``image``; False when it existed already.

    Raises `ImageBuildError` when debootstrap is missing, this is not root, or a
    step fails; debootstrap's and the engine's output stream to the terminal.
    """
    env = engine_env(engine)
    if not force and image_info(engine, image, env) is not None:
        log.info("%s exists; skipping (--force rebuilds it)", image)
        return False
    if not shutil.which("debootstrap"):
        raise ImageBuildError(f"{image}: debootstrap not found (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ImageBuildError(f"{image}: debootstrap needs root (it creates device nodes and chroots)")

    cache = cache or cache_dir()
    debs = cache / "debootstrap" / suite
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"rootfs-{suite}-", dir=cache) as tmp:
        rootfs = Path(tmp) / "rootfs"
        argv = debootstrap_command(rootfs, suite=suite, mirror=mirror, debs=debs)
        log.info("bootstrapping Debian %s from %s into %s", suite, mirror, rootfs)
        try:
            proc = subprocess.run(argv, timeout=DEBOOTSTRAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ImageBuildError(f"{image}: debootstrap took over {DEBOOTSTRAP_TIMEOUT} s") from None
        if proc.returncode != 0:
            # debootstrap's own log holds the failing package's output; keep it, as
            # the tree it is in goes away.
            kept = cache / f"debootstrap-{suite}.log"
            hint = ""
            if (rootfs / "debootstrap" / "debootstrap.log").exists():
                shutil.copyfile(rootfs / "debootstrap" / "debootstrap.log", kept)
                hint = f"; its log: {kept}"
            raise ImageBuildError(f"{image}: debootstrap exited with status {proc.returncode}{hint}")
        _trim(rootfs)
        log.info("importing %s into %s as %s", rootfs, engine, image)
        _import(engine, rootfs, image, env)
    return True


def _import(engine: str, rootfs: Path, image: str, env: dict[str, str]) -> None:
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
    )
    try:
        proc = subprocess.run(import_command(engine, image), stdin=tar.stdout, env=env,
                              timeout=IMPORT_TIMEOUT)
    except subprocess.TimeoutExpired:
        tar.kill()
        raise ImageBuildError(f"{image}: {engine} import took over {IMPORT_TIMEOUT} s") from None
    finally:
        tar.stdout.close()
        tar_status = tar.wait()
    if tar_status != 0 or proc.returncode != 0:
        raise ImageBuildError(
            f"{image}: importing the root file system failed "
            f"(tar status {tar_status}, {engine} import status {proc.returncode})"
        )
