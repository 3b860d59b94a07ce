"""HubForge's standard images: what they are, and the version they are tagged with.

Each image is a directory under ``images/`` in the checkout holding a
``Containerfile``, a ``requirements.in`` (what to install) and a
``requirements.lock`` (every package pinned with hashes, generated from the ``.in``
by `hubforge.images.build.lock_image`). `IMAGES` describes them; `build` builds and
locks them, `base` bootstraps the Debian base used where no registry is reachable,
and `cli` is the ``hubforge images`` command. docs/images.md is the user's guide.

The default tags, ``hubforge/<name>:<IMAGE_VERSION>``, are the images that
``spawner_profiles/default.yaml`` offers as the current version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..exceptions import HubForgeError
from ..settings import REPO_ROOT

#: The release the default tags carry; the profiles' current image version.
IMAGE_VERSION = "2026.11"

#: Where the images' Containerfiles and lock files live.
IMAGES_DIR = REPO_ROOT / "images"


class ImageBuildError(HubForgeError):
    """Building, bootstrapping or locking an image failed.

    The message names the image and what failed; the engine's own output has been
    shown above it.
    """


@dataclass(frozen=True)
class ImageSpec:
    """One standard image.

    ``python_version`` is the interpreter the lock file is compiled for; it must be
    the base image's Python, which the Containerfile checks (its ``PYTHON_VERSION``
    build argument defaults to the same value). ``constrained_by`` names images whose
    lock this one's resolution must agree with, so that packages both images carry
    (Dask above all: clients, schedulers and workers must match) have one version.
    ``local_base`` says whether the locally bootstrapped Debian base can stand in
    for the public base image.
    """

    name: str
    description: str
    python_version: str
    constrained_by: tuple[str, ...] = ()
    local_base: bool = False

    @property
    def directory(self) -> Path:
        return IMAGES_DIR / self.name

    @property
    def containerfile(self) -> Path:
        return self.directory / "Containerfile"

    @property
    def requirements_in(self) -> Path:
        return self.directory / "requirements.in"

    @property
    def lock_file(self) -> Path:
        return self.directory / "requirements.lock"

    def tag(self, version: str = IMAGE_VERSION) -> str:
        """``hubforge/<name>:<version>``, the name the spawner profiles use."""
        return f"hubforge/{self.name}:{version}"


IMAGES: dict[str, ImageSpec] = {
    "cpu": ImageSpec(
        name="cpu",
        description="JupyterLab, papermill, Dask, pandas, pyarrow, scikit-learn",
        python_version="3.11",
        local_base=True,
    ),
    "gpu": ImageSpec(
        name="gpu",
        description="the CPU image's packages plus PyTorch built for CUDA 12.8",
        python_version="3.12",
        constrained_by=("cpu",),
    ),
}


def get_image(name: str) -> ImageSpec:
    """The `ImageSpec` called ``name``; `ImageBuildError` naming the choices otherwise."""
    try:
        return IMAGES[name]
    except KeyError:
        raise ImageBuildError(f"unknown image {name!r}; choose one of: {', '.join(IMAGES)}") from None
