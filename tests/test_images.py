"""The standard images: lock files, Containerfiles, the build helpers, and a real build.

The fast tests read the lock files and Containerfiles, lint the Containerfiles with
hadolint, re-resolve the locks with uv, and check the command lines the build helpers
produce. The slow test bootstraps the local Debian base, builds the CPU image on it
with podman, and runs what a notebook server needs inside a container; it reuses an
image whose content hash is unchanged.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import hubforge
from hubforge import images as images_pkg
from hubforge.cli import build_parser
from hubforge.images import IMAGE_VERSION, IMAGES, IMAGES_DIR, ImageSpec, get_image
from hubforge.images.base import LOCAL_BASE_IMAGE, PACKAGES, build_base, debootstrap_command, import_command
from hubforge.images.build import (
    HASH_LABEL,
    PYTHON_PLATFORM,
    build_command,
    build_image,
    content_hash,
    engine_env,
    find_uv,
    image_info,
    image_labels,
    lock_command,
)
from hubforge.podman import container_engine, ensure_podman_conf, podman_conf_text, podman_env

REPO_ROOT = IMAGES_DIR.parent

# What the issue asks both images to carry (the single-user server, HubForge's
# notebook side and its imports, jobs, Dask, data science).
REQUIRED = {
    "jupyterhub", "jupyterlab", "jupyter-server", "ipykernel", "ipywidgets", "papermill",
    "dask", "distributed", "dask-gateway", "pandas", "pyarrow", "scikit-learn", "pyyaml",
    "traitlets", "jsonschema",
}

# HubForge's notebook side, as loaded in a server or a kernel: the package's
# __init__, the hubforge.widgets alias, everything under singleuser/, the service
# client and the notebook half of data access.
PACKAGE_DIR = Path(hubforge.__file__).parent
SINGLEUSER_SOURCES = [
    PACKAGE_DIR / "__init__.py", PACKAGE_DIR / "widgets.py", PACKAGE_DIR / "client.py",
    *sorted((PACKAGE_DIR / "singleuser").rglob("*.py")),
    *(PACKAGE_DIR / "data" / f"{m}.py" for m in ("__init__", "preview", "magics", "widget")),
]


def read_lock(path: Path) -> list[tuple[Requirement, list[str]]]:
    """Each requirement of a hashed lock file with its ``--hash`` options."""
    text = re.sub(r"\\\n", " ", path.read_text())
    entries = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        spec, *options = line.split(" --hash=")
        entries.append((Requirement(spec.strip()), [o.strip() for o in options]))
    return entries


def pins(name: str) -> dict[str, str]:
    """{canonical name: version} of an image's lock file."""
    return {
        canonicalize_name(req.name): next(iter(req.specifier)).version
        for req, _ in read_lock(get_image(name).lock_file)
    }


# --- lock files --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(IMAGES))
def test_lock_pins_every_package_exactly_with_hashes(name):
    entries = read_lock(get_image(name).lock_file)
    assert len(entries) > 50
    for req, hashes in entries:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, str(req)
        assert not req.extras and req.marker is None and req.url is None, str(req)
        assert hashes and all(h.startswith("sha256:") for h in hashes), f"{req}: no sha256 hashes"


@pytest.mark.parametrize("name", list(IMAGES))
def test_lock_carries_the_required_packages(name):
    locked = pins(name)
    missing = REQUIRED - set(locked)
    assert not missing, f"{name} lock lacks {sorted(missing)}"
    assert locked["jupyterhub"] == "5.5.1"  # the hub's version: the single-user side must match


def test_gpu_lock_has_cuda_torch_and_cpu_lock_has_no_torch():
    cpu, gpu = pins("cpu"), pins("gpu")
    assert "torch" not in cpu
    assert "torch" in gpu
    # On PyPI the Linux torch wheel is the CUDA build: it needs the CUDA 12 runtime wheels.
    assert "nvidia-cuda-runtime-cu12" in gpu and "nvidia-cudnn-cu12" in gpu


def test_packages_in_both_images_have_one_version():
    """Dask clients, schedulers and workers must run the same versions, and a notebook
    must behave the same in either image: the GPU lock is compiled with the CPU lock as
    constraints, so every package both carry is pinned alike."""
    cpu, gpu = pins("cpu"), pins("gpu")
    differ = {n: (cpu[n], gpu[n]) for n in cpu.keys() & gpu.keys() if cpu[n] != gpu[n]}
    assert not differ


@pytest.mark.parametrize("name", list(IMAGES))
def test_lock_is_what_uv_resolves_from_requirements_in(name, tmp_path):
    """Run `hubforge images lock`'s exact uv command, writing to a copy of the lock.

    uv keeps the pins it finds in the output file wherever they still satisfy the
    requirements, so the result equals the lock byte for byte only if the lock is
    complete, its pins agree with each other and with every package's metadata, it
    matches requirements.in (an edit without relocking fails), and the GPU lock still
    agrees with the CPU lock it is constrained by. A yanked pin fails too. uv's cache
    answers offline when it can; otherwise, or when the offline answer differs, PyPI
    decides.
    """
    spec = get_image(name)
    copy = tmp_path / "requirements.lock"
    argv = lock_command(spec, uv=find_uv(), output=str(copy))
    for extra in (["--offline"], []):
        shutil.copyfile(spec.lock_file, copy)
        proc = subprocess.run([*argv, *extra], cwd=IMAGES_DIR, capture_output=True, text=True, timeout=600)
        if proc.returncode == 0 and copy.read_text() == spec.lock_file.read_text():
            return
    assert proc.returncode == 0, proc.stderr
    diff = difflib.unified_diff(spec.lock_file.read_text().splitlines(), copy.read_text().splitlines(),
                                "committed", "resolved", lineterm="", n=1)
    pytest.fail(f"{spec.lock_file} is stale; run `hubforge images lock {name}`:\n" + "\n".join(list(diff)[:60]))


def _top_level_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("name", list(IMAGES))
def test_notebook_side_imports_are_all_locked(name):
    """Every third-party module HubForge's notebook side imports comes from a package
    in the lock: the image installs HubForge with --no-deps, so nothing else is there."""
    modules = set()
    for source in SINGLEUSER_SOURCES:
        modules |= _top_level_imports(source)
    modules -= set(sys.stdlib_module_names) | {"hubforge"}
    assert modules, "the notebook side imports no third-party module?"
    owners = packages_distributions()
    locked = set(pins(name))
    for module in sorted(modules):
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists, f"{module}: no installed distribution provides it"
        assert dists & locked, f"{module} (from {sorted(dists)}) is not in the {name} lock"


# --- Containerfiles ----------------------------------------------------------------


def test_hadolint_passes_both_containerfiles():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    files = [str(spec.containerfile) for spec in IMAGES.values()]
    proc = subprocess.run([hadolint, "--config", str(IMAGES_DIR / ".hadolint.yaml"), "--no-color", *files],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", list(IMAGES))
def test_containerfile_matches_its_image(name):
    spec = get_image(name)
    text = spec.containerfile.read_text()
    # The Python the lock is compiled for is the one the build checks for.
    assert re.search(rf"^ARG PYTHON_VERSION={re.escape(spec.python_version)}$", text, re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and base.group(1).startswith("docker.io/") and ":" in base.group(1)
    assert text.index("ARG BASE_IMAGE=") < text.index("FROM ${BASE_IMAGE}")
    assert 'CMD ["jupyterhub-singleuser"]' in text and "EXPOSE 8888" in text
    assert "USER 1000:1000" in text and "WORKDIR /home/jovyan" in text
    assert f'org.opencontainers.image.title="hubforge/{name}"' in text
    # The lock is installed before HubForge, so code changes rebuild one small layer.
    assert text.index("requirements.lock") < text.index("hubforge-*.whl")


def test_default_tags_are_the_profiles_current_images():
    profiles = (REPO_ROOT / "spawner_profiles" / "default.yaml").read_text()
    for spec in IMAGES.values():
        assert spec.tag() == f"hubforge/{spec.name}:{IMAGE_VERSION}"
        assert f"image: {spec.tag()}" in profiles


# --- build helpers (pure) ----------------------------------------------------------


def test_build_command_for_podman_mounts_the_ca_bundle_and_keeps_shell():
    argv = build_command(
        "podman", context=Path("/ctx"), tag="hubforge/cpu:2026.11",
        build_args={"PYTHON_VERSION": "3.11", "BASE_IMAGE": LOCAL_BASE_IMAGE},
        labels={HASH_LABEL: "abc"}, ca_bundle=Path("/etc/ssl/certs/ca-certificates.crt"),
    )
    assert argv == [
        "podman", "build", "--file", "/ctx/Containerfile", "--tag", "hubforge/cpu:2026.11",
        "--format", "docker",
        "--volume", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
        "--build-arg", "PYTHON_VERSION=3.11", "--build-arg", f"BASE_IMAGE={LOCAL_BASE_IMAGE}",
        "--label", f"{HASH_LABEL}=abc", "/ctx",
    ]


def test_build_command_for_docker_has_no_podman_options():
    argv = build_command("docker", context=Path("/ctx"), tag="t", build_args={}, labels={},
                         ca_bundle=Path("/ca.crt"))
    assert argv == ["docker", "build", "--file", "/ctx/Containerfile", "--tag", "t", "/ctx"]


def test_lock_command_targets_the_image_python_and_constrains_gpu_by_cpu():
    assert lock_command(get_image("cpu"), upgrade=True) == [
        "uv", "pip", "compile", "cpu/requirements.in", "--output-file", "cpu/requirements.lock",
        "--python-version", "3.11", "--python-platform", PYTHON_PLATFORM, "--generate-hashes",
        "--custom-compile-command", "hubforge images lock cpu", "--upgrade",
    ]
    gpu = lock_command(get_image("gpu"))
    assert gpu[gpu.index("--python-version") + 1] == "3.12"
    assert gpu[-2:] == ["--constraint", "cpu/requirements.lock"]


def test_content_hash_follows_what_the_image_is_made_of(tmp_path, monkeypatch):
    (tmp_path / "cpu").mkdir()
    for f in ("Containerfile", "requirements.lock"):
        shutil.copyfile(IMAGES_DIR / "cpu" / f, tmp_path / "cpu" / f)
    monkeypatch.setattr(images_pkg, "IMAGES_DIR", tmp_path)
    spec = ImageSpec(name="cpu", description="", python_version="3.11")
    first = content_hash(spec)
    assert content_hash(spec) == first
    assert content_hash(spec, LOCAL_BASE_IMAGE) != first
    assert content_hash(spec, LOCAL_BASE_IMAGE, "sha256:1") != content_hash(spec, LOCAL_BASE_IMAGE, "sha256:2")
    with open(tmp_path / "cpu" / "requirements.lock", "a") as f:
        f.write("\n")
    assert content_hash(spec) != first


def test_debootstrap_and_import_commands():
    argv = debootstrap_command(Path("/r"), debs=Path("/c"))
    assert argv == ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                    "--cache-dir=/c", "bookworm", "/r", "http://deb.debian.org/debian"]
    assert {"python3", "python3-venv", "ca-certificates"} <= set(PACKAGES)
    imp = import_command("podman", LOCAL_BASE_IMAGE)
    assert imp[:2] == ["podman", "import"] and imp[-2:] == ["-", LOCAL_BASE_IMAGE]
    assert "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in imp


# --- podman helper -----------------------------------------------------------------


def test_podman_conf_is_written_once_and_used(tmp_path):
    conf = tmp_path / "sub" / "containers.conf"
    assert ensure_podman_conf(conf) == conf
    text = conf.read_text()
    assert "default_ulimits = []" in text
    conf.write_text("# the admin's\n")
    ensure_podman_conf(conf)
    assert conf.read_text() == "# the admin's\n"
    assert podman_env(conf, base={"PATH": "/bin"}) == {"PATH": "/bin", "CONTAINERS_CONF": str(conf)}
    # An administrator's CONTAINERS_CONF wins over the default file.
    assert podman_env(base={"CONTAINERS_CONF": "/x.conf"})["CONTAINERS_CONF"] == "/x.conf"
    assert 'runtime = "runc"' in podman_conf_text("runc")
    assert "[engine]" not in podman_conf_text(None)


# --- the command -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    """The ``hubforge`` command's own parser, where `register` added ``images``."""
    return build_parser()


@pytest.mark.parametrize("argv", [["images"], ["images", "build"], ["images", "base"], ["images", "lock"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hubforge {' '.join(argv)}")


def test_cli_parses_choices(capsys):
    args = _parser().parse_args(["images", "build", "gpu", "--base-image", "x", "--tag", "t"])
    assert (args.image, args.base_image, args.tag, args.local_base) == ("gpu", "x", "t", False)
    assert _parser().parse_args(["images", "lock"]).images == []
    with pytest.raises(SystemExit):
        _parser().parse_args(["images", "lock", "tpu"])
    assert "unknown image 'tpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["images", "build", "--local-base", "--base-image", "x"])


def test_cli_refuses_the_local_base_for_the_gpu_image(capsys):
    args = _parser().parse_args(["images", "build", "gpu", "--local-base", "--engine", "podman"])
    assert args.func(args) == 1
    assert "gpu image: the local Debian base cannot stand in" in capsys.readouterr().err


# --- a real build ------------------------------------------------------------------


def _run_in(image: str, *command: str) -> str:
    proc = subprocess.run(["podman", "run", "--rm", "--network", "host", image, *command],
                          capture_output=True, text=True, env=engine_env("podman"), timeout=300)
    assert proc.returncode == 0, f"{' '.join(command)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.containers
@pytest.mark.timeout(1800)
def test_cpu_image_builds_on_the_local_base_and_runs_a_notebook_server_side():
    """debootstrap + podman import, then the CPU image on that base (minutes the first
    time; later runs reuse both while the content hash is unchanged)."""
    if container_engine() != "podman":
        pytest.skip("podman is not installed (apt-get install podman runc)")
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        pytest.skip("the local base needs root and debootstrap (apt-get install debootstrap)")

    build_base(engine="podman")
    result = build_image("cpu", engine="podman", base_image=LOCAL_BASE_IMAGE)
    env = engine_env("podman")
    labels = image_labels(image_info("podman", result.tag, env))
    assert labels[HASH_LABEL] == result.content_hash
    assert labels["org.opencontainers.image.version"] == IMAGE_VERSION
    assert labels["org.opencontainers.image.base.name"] == LOCAL_BASE_IMAGE

    locked = pins("cpu")
    assert _run_in(result.tag, "jupyterhub-singleuser", "--version").strip() == locked["jupyterhub"]
    assert locked["papermill"] in _run_in(result.tag, "papermill", "--version")
    probe = (
        "import json, os, sys, hubforge, hubforge.singleuser, hubforge.widgets\n"
        "import dask.distributed, dask_gateway, ipywidgets, pandas, pyarrow, sklearn\n"
        "from hubforge.singleuser.info import server_info\n"
        "print(json.dumps({'uid': os.getuid(), 'home': os.environ['HOME'], 'cwd': os.getcwd(),\n"
        "                  'prefix': sys.prefix, 'hubforge': hubforge.__file__,\n"
        "                  'version': server_info()['version']}))\n"
    )
    facts = json.loads(_run_in(result.tag, "python", "-c", probe))
    assert facts["uid"] == 1000 and facts["home"] == facts["cwd"] == "/home/jovyan"
    assert facts["prefix"] == "/opt/hubforge/venv"
    assert facts["hubforge"].startswith("/opt/hubforge/venv/lib/python3.11/site-packages/hubforge/")
    assert facts["version"] == hubforge.__version__
    # The wheel's jupyter_server_config.d enables the extension in the image's servers
    # (jupyter lists extensions on stderr).
    extensions = _run_in(result.tag, "bash", "-c", "jupyter server extension list 2>&1")
    assert re.search(r"hubforge\.singleuser\s.*enabled", extensions)
    assert re.search(r"hubforge\.singleuser\s.*OK", extensions)
