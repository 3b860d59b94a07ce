"""``hubforge images``: build the standard images, their Debian base, and their lock files.

`register` adds the command group to the ``hubforge`` parser::

    hubforge images build [cpu|gpu] [--base-image IMAGE | --local-base] [--tag TAG]
                          [--engine podman|docker] [--force]
    hubforge images base [--engine podman|docker] [--force] [--mirror URL]
    hubforge images lock [cpu|gpu ...] [--upgrade]

Each handler takes the parsed ``args`` and returns the exit status: 0 on success, 1
when a build fails (the message names the image).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import IMAGE_VERSION, IMAGES, ImageBuildError, get_image

log = logging.getLogger("hubforge.images")


class _ProgressHandler(logging.Handler):
    """Prints progress lines on whatever ``sys.stderr`` is when they are logged."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"hubforge images: {record.getMessage()}", file=sys.stderr, flush=True)


def _show_progress() -> None:
    """Print this package's progress lines on stderr (set up once per process)."""
    if not any(isinstance(h, _ProgressHandler) for h in log.handlers):
        log.addHandler(_ProgressHandler())
        log.setLevel(logging.INFO)
        log.propagate = False


def _engine(args) -> str:
    from ..podman import container_engine

    engine = args.engine or container_engine()
    if not engine:
        raise ImageBuildError("neither podman nor docker was found (apt-get install podman runc)")
    return engine


def cmd_build(args) -> int:
    """Build a standard image with podman or Docker (podman preferred).

    The build context is assembled in a temporary directory: the image's Containerfile,
    its lock file and a HubForge wheel built from this checkout. An image whose
    content hash (Containerfile, lock, HubForge's sources, base image) is unchanged is
    kept; --force rebuilds it.
    """
    from .base import LOCAL_BASE_IMAGE, build_base
    from .build import build_image

    _show_progress()
    started = time.monotonic()
    try:
        spec = get_image(args.image)
        engine = _engine(args)
        base_image = args.base_image
        if args.local_base:
            if not spec.local_base:
                raise ImageBuildError(
                    f"{spec.name} image: the local Debian base cannot stand in for its base image; "
                    "pass --base-image"
                )
            build_base(engine=engine)
            base_image = LOCAL_BASE_IMAGE
        result = build_image(spec.name, engine=engine, tag=args.tag, base_image=base_image, force=args.force)
    except ImageBuildError as e:
        print(f"hubforge images build: {e}", file=sys.stderr)
        return 1
    if result.built:
        log.info("%s ready in %.0f s", result.tag, time.monotonic() - started)
    return 0


def cmd_base(args) -> int:
    """Bootstrap a minimal Debian bookworm with debootstrap and import it as an image.

    The result, localhost/hubforge-base:bookworm by default, can replace the CPU
    image's public base where no registry is reachable:
    `hubforge images build cpu --local-base`. Needs root and Debian's archive. An
    existing image is kept unless --force.
    """
    from .base import build_base

    _show_progress()
    try:
        build_base(engine=_engine(args), image=args.image, mirror=args.mirror, force=args.force)
    except ImageBuildError as e:
        print(f"hubforge images base: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_lock(args) -> int:
    """Regenerate images' lock files from their requirements.in with uv.

    Every package is pinned with its hashes, for the image's Python version and
    Linux x86_64. Existing pins are kept unless --upgrade; the GPU lock follows the
    CPU lock's pins for the packages both images carry, so lock the CPU image first
    (the default order).
    """
    from .build import lock_image

    _show_progress()
    names = args.images or list(IMAGES)
    try:
        for name in sorted(names, key=list(IMAGES).index):
            path = lock_image(name, upgrade=args.upgrade)
            log.info("wrote %s", path)
    except ImageBuildError as e:
        print(f"hubforge images lock: {e}", file=sys.stderr)
        return 1
    return 0


def _image_name(value: str) -> str:
    if value not in IMAGES:
        raise argparse.ArgumentTypeError(f"unknown image {value!r}; choose one of: {', '.join(IMAGES)}")
    return value


def _engine_option(parser) -> None:
    parser.add_argument("--engine", choices=["podman", "docker"],
                        help="container engine (default: podman if installed, else docker)")


def register(subparsers) -> None:
    """Add the ``images`` command group to ``hubforge``'s subparsers."""
    from .base import LOCAL_BASE_IMAGE, MIRROR

    images = subparsers.add_parser(
        "images", help="build the standard CPU and GPU images",
        description="Build HubForge's standard images, their local Debian base, and their lock files. "
                    "See docs/images.md.",
    )
    isub = images.add_subparsers(dest="images_command", metavar="COMMAND", required=True)

    build = isub.add_parser("build", help="build an image with podman or Docker", description=cmd_build.__doc__)
    build.add_argument("image", nargs="?", default="cpu", choices=list(IMAGES),
                       help="which image (default: cpu; the GPU image is large)")
    bases = build.add_mutually_exclusive_group()
    bases.add_argument("--base-image", metavar="IMAGE",
                       help="the BASE_IMAGE build argument (default: the Containerfile's public image)")
    bases.add_argument("--local-base", action="store_true",
                       help=f"build on {LOCAL_BASE_IMAGE}, bootstrapping it first if missing (CPU image)")
    build.add_argument("--tag", metavar="TAG", help=f"image tag (default: hubforge/IMAGE:{IMAGE_VERSION})")
    _engine_option(build)
    build.add_argument("--force", action="store_true", help="rebuild even when the image is up to date")
    build.set_defaults(func=cmd_build)

    base = isub.add_parser("base", help="bootstrap the local Debian base image (debootstrap)",
                           description=cmd_base.__doc__)
    base.add_argument("--image", default=LOCAL_BASE_IMAGE, metavar="NAME",
                      help=f"image name (default: {LOCAL_BASE_IMAGE})")
    base.add_argument("--mirror", default=MIRROR, metavar="URL", help=f"Debian mirror (default: {MIRROR})")
    _engine_option(base)
    base.add_argument("--force", action="store_true", help="bootstrap again even when the image exists")
    base.set_defaults(func=cmd_base)

    lock = isub.add_parser("lock", help="regenerate lock files with uv", description=cmd_lock.__doc__)
    # A type, not choices: argparse checks an empty "*" list against choices and fails.
    lock.add_argument("images", nargs="*", type=_image_name, metavar="IMAGE",
                      help=f"which images ({', '.join(IMAGES)}; default: all)")
    lock.add_argument("--upgrade", action="store_true",
                      help="move every package to its newest allowed version")
    lock.set_defaults(func=cmd_lock)
