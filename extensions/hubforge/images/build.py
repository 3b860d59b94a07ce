"""Building and locking the standard images.

Pure builders, tested by comparing values: `build_command` (the engine's command
line), `lock_command` (uv's) and `content_hash`. Around them, the code that runs
things: `build_image`, `lock_image`, `build_wheel`, `image_info`.

How `build_image` goes:

1. It pulls the base image unless it is present, then hashes everything the image
   is made from: the Containerfile, the lock file, HubForge's sources (what goes
   into its wheel), and the base image's name and ID. An image already tagged with
   that hash in its `HASH_LABEL` label is up to date and kept (``force`` rebuilds
   it).
2. It builds a HubForge wheel from the checkout (``pip wheel --no-deps``).
3. It assembles the build context in a temporary directory: the Containerfile, the
   lock file and the wheel, a few hundred kB whatever else the checkout holds.
4. It runs ``podman build`` (or ``docker build``), streaming its output, with the
   ``PYTHON_VERSION`` the lock targets, ``BASE_IMAGE`` when given, and labels for the
   version, the git revision and the content hash. With podman the host's CA bundle
   is mounted over the image's during ``RUN`` steps, so pip trusts what the host
   trusts (a TLS-inspecting proxy's CA, for instance) without it entering the image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..podman import podman_env
from ..settings import REPO_ROOT
from . import IMAGES_DIR, ImageBuildError, ImageSpec, get_image

log = logging.getLogger(__name__)

#: The label holding `content_hash`, which decides whether an image is up to date.
HASH_LABEL = "hubforge.image.content-hash"

#: Lock files target this platform: glibc 2.28 or newer on x86_64 (Debian 12 has
#: 2.36, Ubuntu 24.04 2.39).
PYTHON_PLATFORM = "x86_64-manylinux_2_28"

#: Where images expect the CA bundle (Debian and Ubuntu's path; the Containerfiles'
#: ``pip install --cert`` reads it).
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

BUILD_TIMEOUT = 7200  # seconds; the GPU image downloads about 3 GB of wheels
WHEEL_TIMEOUT = 600
LOCK_TIMEOUT = 900
INSPECT_TIMEOUT = 60


@dataclass(frozen=True)
class BuildResult:
    """What `build_image` did: ``built`` is False when the image was up to date."""

    tag: str
    built: bool
    content_hash: str


def engine_env(engine: str) -> dict[str, str]:
    """The environment to run ``engine`` with (podman gets HubForge's containers.conf)."""
    return podman_env() if engine == "podman" else dict(os.environ)


def image_info(engine: str, image: str, env: dict[str, str] | None = None) -> dict | None:
    """``<engine> image inspect`` of ``image`` as a dict, or None when it is absent."""
    try:
        proc = subprocess.run(
            [engine, "image", "inspect", image],
            capture_output=True, text=True, env=env, timeout=INSPECT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"{engine} image inspect {image} did not answer in {INSPECT_TIMEOUT} s") from None
    if proc.returncode != 0:
        return None
    found = json.loads(proc.stdout or "[]")
    return found[0] if found else None


def image_labels(info: dict | None) -> dict[str, str]:
    """The labels of an `image_info` result (podman and Docker both use Config.Labels)."""
    if not info:
        return {}
    return (info.get("Config") or {}).get("Labels") or {}


def hubforge_sources() -> list[Path]:
    """The checkout's files that make up HubForge's wheel, sorted."""
    files = [REPO_ROOT / "pyproject.toml", REPO_ROOT / "README.md"]
    for path in (REPO_ROOT / "extensions").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(path)
    return sorted(files)


def content_hash(spec: ImageSpec, base_image: str | None = None, base_id: str | None = None) -> str:
    """SHA-256 over what ``spec``'s image is made from (see the module docstring).

    ``base_image`` is the BASE_IMAGE build argument (None: the Containerfile's
    default, which the Containerfile's own bytes cover); ``base_id`` the base's
    image ID where known.
    """
    digest = hashlib.sha256()

    def add(name: str, data: bytes) -> None:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)

    add("python", spec.python_version.encode())
    add("base", (base_image or "").encode())
    add("base-id", (base_id or "").encode())
    add("Containerfile", spec.containerfile.read_bytes())
    add("requirements.lock", spec.lock_file.read_bytes())
    for path in hubforge_sources():
        add(path.relative_to(REPO_ROOT).as_posix(), path.read_bytes())
    return digest.hexdigest()


def host_ca_bundle() -> Path | None:
    """The host's CA bundle: ``$SSL_CERT_FILE``, else Debian's or Fedora's, else None."""
    candidates = [os.environ.get("SSL_CERT_FILE"), IMAGE_CA_BUNDLE, "/etc/pki/tls/certs/ca-bundle.crt"]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return Path(candidate)
    return None


def build_command(
    engine: str,
    *,
    context: Path,
    tag: str,
    build_args: dict[str, str],
    labels: dict[str, str],
    ca_bundle: Path | None = None,
) -> list[str]:
    """The ``<engine> build`` command line for a context holding a ``Containerfile``.

    With podman: Docker's image format (the OCI format drops ``SHELL``, which the
    Containerfiles set for ``pipefail``), and ``ca_bundle`` mounted at the image's CA
    bundle path for the ``RUN`` steps. Docker's ``build`` mounts nothing, so
    ``ca_bundle`` applies to podman only.
    """
    argv = [engine, "build", "--file", str(context / "Containerfile"), "--tag", tag]
    if engine == "podman":
        argv += ["--format", "docker"]
        if ca_bundle is not None:
            argv += ["--volume", f"{ca_bundle}:{IMAGE_CA_BUNDLE}:ro"]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    return [*argv, str(context)]


def git_revision() -> str | None:
    """The checkout's commit, or None outside git."""
    try:
        proc = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def build_wheel(dest: Path) -> Path:
    """Build HubForge's wheel from the checkout into ``dest``; returns its path."""
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dest),
            str(REPO_ROOT)]
    try:
        proc = subprocess.run(argv, timeout=WHEEL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"building HubForge's wheel took over {WHEEL_TIMEOUT} s") from None
    wheels = sorted(dest.glob("hubforge-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise ImageBuildError(f"building HubForge's wheel from {REPO_ROOT} failed (pip status {proc.returncode})")
    return wheels[0]


def default_base_image(spec: ImageSpec) -> str:
    """The ``ARG BASE_IMAGE=`` default in ``spec``'s Containerfile."""
    match = re.search(r"^ARG BASE_IMAGE=(\S+)\s*$", spec.containerfile.read_text(), re.M)
    if not match:
        raise ImageBuildError(f"{spec.containerfile}: no 'ARG BASE_IMAGE=<default>' line")
    return match.group(1)


def pull_image(engine: str, image: str, env: dict[str, str]) -> None:
    """Pull ``image``, streaming the engine's output; `ImageBuildError` when it fails."""
    log.info("pulling the base image %s", image)
    try:
        proc = subprocess.run([engine, "pull", image], env=env, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"pulling {image} took over {BUILD_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise ImageBuildError(f"could not pull {image} ({engine} pull exited with status {proc.returncode})")


def _version_of(tag: str) -> str | None:
    name = tag.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[1] if ":" in name else None


def build_image(
    name: str,
    *,
    engine: str,
    tag: str | None = None,
    base_image: str | None = None,
    force: bool = False,
) -> BuildResult:
    """Build the standard image ``name`` with ``engine`` (see the module docstring).

    ``tag`` defaults to ``hubforge/<name>:<IMAGE_VERSION>``; ``base_image`` to the
    Containerfile's public default. Raises `ImageBuildError` naming the image when a
    step fails.
    """
    spec = get_image(name)
    tag = tag or spec.tag()
    env = engine_env(engine)
    base = base_image or default_base_image(spec)
    base_info = image_info(engine, base, env)
    if base_info is None:
        try:
            pull_image(engine, base, env)
        except ImageBuildError as e:
            hint = ""
            if spec.local_base and not base_image:
                hint = "; without access to its registry, use the local Debian base: --local-base"
            raise ImageBuildError(f"{name} image ({tag}): base image: {e}{hint}") from None
        base_info = image_info(engine, base, env) or {}
    digest = content_hash(spec, base_image, base_info.get("Id"))
    if not force and image_labels(image_info(engine, tag, env)).get(HASH_LABEL) == digest:
        log.info("%s is up to date (content hash %s); --force rebuilds it", tag, digest[:12])
        return BuildResult(tag, False, digest)

    build_args = {"PYTHON_VERSION": spec.python_version}
    if base_image:
        build_args["BASE_IMAGE"] = base_image
    labels = {HASH_LABEL: digest}
    version = _version_of(tag)
    if version:
        labels["org.opencontainers.image.version"] = version
    revision = git_revision()
    if revision:
        labels["org.opencontainers.image.revision"] = revision

    with tempfile.TemporaryDirectory(prefix=f"hubforge-image-{name}-") as tmp:
        context = Path(tmp)
        log.info("building HubForge's wheel")
        try:
            build_wheel(context)
        except ImageBuildError as e:
            raise ImageBuildError(f"{name} image ({tag}): {e}") from None
        shutil.copyfile(spec.containerfile, context / "Containerfile")
        shutil.copyfile(spec.lock_file, context / "requirements.lock")
        argv = build_command(engine, context=context, tag=tag, build_args=build_args, labels=labels,
                             ca_bundle=host_ca_bundle() if engine == "podman" else None)
        log.info("building %s from %s with %s", tag, base, engine)
        try:
            proc = subprocess.run(argv, env=env, timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ImageBuildError(f"{name} image ({tag}): {engine} build took over {BUILD_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise ImageBuildError(
            f"{name} image ({tag}): {engine} build exited with status {proc.returncode}; its output is above"
        )
    log.info("built %s", tag)
    return BuildResult(tag, True, digest)


def find_uv() -> str:
    """uv on PATH or beside this Python; `ImageBuildError` when absent."""
    beside = Path(sys.executable).parent / "uv"
    found = shutil.which("uv") or (str(beside) if beside.is_file() else None)
    if not found:
        raise ImageBuildError("uv not found: pip install uv (it is in HubForge's test extras)")
    return found


def lock_command(
    spec: ImageSpec, *, uv: str = "uv", output: str | None = None, upgrade: bool = False
) -> list[str]:
    """The ``uv pip compile`` command that writes ``spec``'s lock, run in ``images/``.

    ``output`` replaces the lock file's path (relative to ``images/``); uv keeps the
    pins already in the output file unless ``upgrade``. Lock files of the images in
    ``spec.constrained_by`` are constraints, so shared packages keep one version.
    """
    argv = [
        uv, "pip", "compile", f"{spec.name}/requirements.in",
        "--output-file", output or f"{spec.name}/requirements.lock",
        "--python-version", spec.python_version,
        "--python-platform", PYTHON_PLATFORM,
        "--generate-hashes",
        "--custom-compile-command", f"hubforge images lock {spec.name}",
    ]
    for other in spec.constrained_by:
        argv += ["--constraint", f"{other}/requirements.lock"]
    if upgrade:
        argv.append("--upgrade")
    return argv


def lock_image(name: str, *, upgrade: bool = False) -> Path:
    """Regenerate ``images/<name>/requirements.lock`` with uv; returns its path."""
    spec = get_image(name)
    argv = lock_command(spec, uv=find_uv(), upgrade=upgrade)
    log.info("locking %s for Python %s (%s)", spec.requirements_in.relative_to(REPO_ROOT),
             spec.python_version, PYTHON_PLATFORM)
    try:
        # uv echoes the lock on stdout; its progress and errors go to stderr.
        proc = subprocess.run(argv, cwd=IMAGES_DIR, stdout=subprocess.DEVNULL, timeout=LOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"{name} image: uv pip compile took over {LOCK_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise ImageBuildError(f"{name} image: uv pip compile exited with status {proc.returncode}")
    return spec.lock_file
