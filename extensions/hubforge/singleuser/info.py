"""What this notebook server is, as seen from inside it.

`server_info` reads the environment the hub's spawner gave this server and
returns a JSON-able dict. The REST handler, the ``%hubforge`` magic and the
`ServerInfoWidget` all show this one dict; `info_to_text` and `info_to_html`
are the two renderings they share.

Only these variables are read: ``JUPYTERHUB_USER``, ``JUPYTERHUB_SERVER_NAME``,
``HUBFORGE_PROFILE``, ``HUBFORGE_RESOURCES``, ``CUDA_VISIBLE_DEVICES``,
``MEM_LIMIT`` and ``CPU_LIMIT``. Nothing else from the environment reaches
the result, so no token can leak through it. The profile's ``environment``
mapping is reduced to its variable names because admins may put credentials
in its values, and keys of ``HUBFORGE_RESOURCES`` that are not listed here
are dropped for the same reason.

Where ``MEM_LIMIT`` or ``CPU_LIMIT`` is set it wins over the profile's limit:
the spawner sets them from the limits it actually applied.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

_NOT_HUBFORGE = "Not running under HubForge: {reason}."


def _hubforge_version() -> str | None:
    try:
        return version("hubforge")
    except PackageNotFoundError:
        return None


def _number(value: Any) -> float | None:
    """A finite, non-negative number from a JSON value or an env string, else None."""
    # bool is an int subclass; `true` is not a CPU count.
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def format_bytes(n: int | None) -> str | None:
    """``1610612736`` -> ``"1.5 GiB"``, binary units as Kubernetes and cgroups count them.

    Returns None for None so callers can pass an unknown size straight through.
    """
    if n is None:
        return None
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    if unit == "B":
        return f"{int(size)} B"
    return f"{size:.1f}".rstrip("0").rstrip(".") + f" {unit}"


def _parse_resources(raw: str | None) -> tuple[dict[str, Any], str]:
    """The HUBFORGE_RESOURCES object and "" or ({}, why it is unusable)."""
    if raw is None:
        return {}, "HUBFORGE_RESOURCES is not set"
    try:
        resources = json.loads(raw)
    except ValueError:
        # The raw text is never echoed: it may carry environment values.
        return {}, "HUBFORGE_RESOURCES is not valid JSON"
    if not isinstance(resources, dict):
        return {}, "HUBFORGE_RESOURCES is not a JSON object"
    return resources, ""


def _device_ids(raw: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of ids (indices or GPU-/MIG- UUIDs).

    None means the variable is absent, so CUDA is not restricted by it; an
    empty list means it is set and exposes no device.
    """
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _scalar_choices(choices: Any) -> dict[str, Any]:
    if not isinstance(choices, dict):
        return {}
    return {
        str(key): value
        for key, value in choices.items()
        if isinstance(value, (str, int, float, bool)) or value is None
    }


def server_info(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Describe this notebook server from its environment.

    Never raises on bad input: a missing or malformed ``HUBFORGE_RESOURCES``
    gives ``{"hubforge": False, "message": "Not running under HubForge: ..."}``
    with whatever the remaining variables still tell. Keys of the result:

    - ``hubforge``: whether a usable ``HUBFORGE_RESOURCES`` was found.
    - ``message``: one human line on that, "" when all is well.
    - ``version``: the installed hubforge version, or None.
    - ``user``, ``server_name``: the hub user and the named server ("" for the
      default server).
    - ``profile``: ``{"slug", "display_name"}``.
    - ``image``: the container image, or None.
    - ``resources``: ``cpu`` (``guarantee``, ``limit`` in cores), ``memory``
      (``guarantee``, ``limit`` in bytes, with ``*_human`` strings) and
      ``gpus`` (``count`` and ``visible_devices``; see `_device_ids`).
    - ``choices``: the options the user picked in the spawn form.
    - ``environment``: sorted names of the profile's environment variables.
    """
    resources, problem = _parse_resources(environ.get("HUBFORGE_RESOURCES"))

    slug = environ.get("HUBFORGE_PROFILE") or resources.get("slug")
    slug = slug if isinstance(slug, str) and slug else None
    display_name = resources.get("display_name")
    display_name = display_name if isinstance(display_name, str) and display_name else slug

    cpu_limit = _number(environ.get("CPU_LIMIT"))
    if cpu_limit is None:
        cpu_limit = _number(resources.get("cpu_limit"))
    mem_limit = _integer(environ.get("MEM_LIMIT"))
    if mem_limit is None:
        mem_limit = _integer(resources.get("mem_limit"))
    mem_guarantee = _integer(resources.get("mem_guarantee"))

    devices = _device_ids(environ.get("CUDA_VISIBLE_DEVICES"))
    gpu_count = _integer(resources.get("gpu_count"))
    if gpu_count is None:
        gpu_count = len(devices) if devices is not None else 0

    image = resources.get("image")
    environment = resources.get("environment")

    return {
        "hubforge": not problem,
        "message": _NOT_HUBFORGE.format(reason=problem) if problem else "",
        "version": _hubforge_version(),
        "user": environ.get("JUPYTERHUB_USER") or None,
        "server_name": environ.get("JUPYTERHUB_SERVER_NAME", ""),
        "profile": {"slug": slug, "display_name": display_name},
        "image": image if isinstance(image, str) and image else None,
        "resources": {
            "cpu": {
                "guarantee": _number(resources.get("cpu_guarantee")),
                "limit": cpu_limit,
            },
            "memory": {
                "guarantee": mem_guarantee,
                "guarantee_human": format_bytes(mem_guarantee),
                "limit": mem_limit,
                "limit_human": format_bytes(mem_limit),
            },
            "gpus": {"count": gpu_count, "visible_devices": devices},
        },
        "choices": _scalar_choices(resources.get("choices")),
        "environment": sorted(str(name) for name in environment)
        if isinstance(environment, dict)
        else [],
    }


def _rows(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, plain text value) pairs shared by the text and HTML renderings."""

    def show(value: Any) -> str:
        return "-" if value is None or value == "" else str(value)

    def cores(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    resources = info["resources"]
    cpu, memory, gpus = resources["cpu"], resources["memory"], resources["gpus"]
    slug, name = info["profile"]["slug"], info["profile"]["display_name"]
    profile_text = f"{name} ({slug})" if slug and name and name != slug else show(name or slug)
    devices = gpus["visible_devices"]
    gpu_text = str(gpus["count"])
    if devices:
        gpu_text += f" (devices {', '.join(devices)})"

    rows = [
        ("User", show(info["user"])),
        ("Server", info["server_name"] or "(default)"),
        ("Profile", profile_text),
        ("Image", show(info["image"])),
        ("CPU", f"{cores(cpu['guarantee'])} guaranteed, {cores(cpu['limit'])} limit"),
        (
            "Memory",
            f"{show(memory['guarantee_human'])} guaranteed, {show(memory['limit_human'])} limit",
        ),
        ("GPUs", gpu_text),
    ]
    for key, value in sorted(info["choices"].items()):
        rows.append((f"Choice: {key}", show(value)))
    rows.append(("Environment", ", ".join(info["environment"]) or "-"))
    rows.append(("HubForge", show(info["version"])))
    return rows


def info_to_text(info: Mapping[str, Any]) -> str:
    """A plain-text table of `server_info`'s result, for terminals and logs."""
    rows = _rows(info)
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    if info["message"]:
        lines.insert(0, info["message"])
    return "\n".join(lines)


def info_to_html(info: Mapping[str, Any]) -> str:
    """An HTML table of `server_info`'s result; every value is escaped."""
    body = "".join(
        f"<tr><th style='text-align: left'>{html.escape(label)}</th>"
        f"<td style='text-align: left'>{html.escape(value)}</td></tr>"
        for label, value in _rows(info)
    )
    message = f"<p><em>{html.escape(info['message'])}</em></p>" if info["message"] else ""
    return f"<div class='hubforge-server-info'>{message}<table>{body}</table></div>"


class ServerInfo:
    """`server_info`'s result wrapped for display.

    Jupyter shows `_repr_html_`, a terminal shows the text table. The dict
    itself is ``.data``.
    """

    def __init__(self, data: Mapping[str, Any]):
        self.data = data

    def __repr__(self) -> str:
        return info_to_text(self.data)

    def _repr_html_(self) -> str:
        return info_to_html(self.data)
