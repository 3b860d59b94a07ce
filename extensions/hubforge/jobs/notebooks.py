"""What the jobs service checks in a notebook before it accepts a job: its kernel and
its parameters.

A job's parameters are checked against the notebook's ``parameters`` cell (the cell
tagged ``parameters``, as papermill defines it), so a typo or a wrong type is a 400 when
the job is created, not a failed run at 6 a.m. Papermill's own inspection finds the
parameters (their names, defaults and help comments); the *type* of each is the type of
its default value (``n = 2`` is an int) unless the cell annotates it (``n: float = 2``).
Values are JSON, so the check is on JSON types: an int may stand for a float, ``null``
for anything, a string only for a string.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from typing import Any

import nbformat

from .errors import InvalidJob

#: Types a parameter may have, by the name ``inferred`` reports, and what JSON values fit.
TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}
JSON_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}


@dataclass(frozen=True)
class NotebookParameter:
    """One variable of the ``parameters`` cell: its name, type, default (source text), help."""

    name: str
    type: str
    default: str
    help: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "default": self.default, "help": self.help}


@dataclass(frozen=True)
class InspectedNotebook:
    """A notebook the service accepted: its JSON, kernel name and parameters."""

    content: dict
    kernel: str
    language: str
    parameters: tuple[NotebookParameter, ...]

    def parameter(self, name: str) -> NotebookParameter | None:
        return next((p for p in self.parameters if p.name == name), None)


def read_notebook(content: Any, *, field: str = "notebook.content", max_bytes: int = 20 * 2**20) -> nbformat.NotebookNode:
    """Parse and validate a notebook's JSON (a dict, or its text), or raise InvalidJob."""
    if isinstance(content, (str, bytes)):
        if len(content) > max_bytes:
            raise InvalidJob(field, f"the notebook is larger than {max_bytes // 2**20} MiB")
        try:
            content = json.loads(content)
        except ValueError as e:
            raise InvalidJob(field, f"not JSON: {e}") from None
    if not isinstance(content, dict):
        raise InvalidJob(field, f"must be a notebook (a JSON object), got {_json_name(content)}")
    if len(json.dumps(content)) > max_bytes:
        raise InvalidJob(field, f"the notebook is larger than {max_bytes // 2**20} MiB")
    try:
        # reads() as from a file: multi-line sources joined, older formats converted.
        nb = nbformat.reads(json.dumps(content), as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # nbformat raises several types: ValidationError, KeyError, ...
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidJob(field, f"not a valid notebook: {message}") from None
    return nb


def inspect(content: Any, kernels: set[str] | None = None, *, field: str = "notebook.content",
            max_bytes: int = 20 * 2**20) -> InspectedNotebook:
    """Check a notebook for a job: valid, with a kernel this platform has; its parameters.

    `kernels` is the set of kernel names available to runs (None: don't check).
    """
    nb = read_notebook(content, field=field, max_bytes=max_bytes)
    spec = nb.metadata.get("kernelspec") or {}
    kernel = spec.get("name") if isinstance(spec, dict) else None
    if not kernel:
        raise InvalidJob(f"{field}.metadata.kernelspec", "the notebook has no kernel; open it in JupyterLab, pick a kernel and save it")
    if kernels is not None and kernel not in kernels:
        raise InvalidJob(
            f"{field}.metadata.kernelspec.name",
            f"kernel {kernel!r} is not available to jobs; available: {', '.join(sorted(kernels)) or 'none'}",
        )
    language = (nb.metadata.get("language_info") or {}).get("name") or spec.get("language") or "python"
    return InspectedNotebook(content=nb, kernel=kernel, language=language, parameters=tuple(_parameters(nb, kernel, language)))


def _parameters(nb, kernel: str, language: str) -> list[NotebookParameter]:
    # papermill's inspection (what `papermill --help-notebook` prints) finds the cell
    # and parses it with the language's translator; it is not in papermill's public
    # API under a name that takes a notebook object, hence the underscore.
    import copy

    from papermill.inspection import _infer_parameters

    # papermill expects every cell to have a tags list (its loader adds them).
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
    found = []
    for p in _infer_parameters(nb, name=kernel, language=language):
        kind = p.inferred_type_name if p.inferred_type_name not in ("None", "") else _literal_type(p.default)
        found.append(NotebookParameter(name=p.name, type=kind, default=p.default, help=p.help))
    return found


def _literal_type(source: str) -> str:
    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "any"
    for kind, check in (("bool", TYPE_CHECKS["bool"]), ("int", TYPE_CHECKS["int"]),
                        ("float", lambda v: isinstance(v, float)), ("str", TYPE_CHECKS["str"]),
                        ("list", lambda v: isinstance(v, (list, tuple))), ("dict", TYPE_CHECKS["dict"])):
        if check(value):
            return kind
    return "any"


def check_parameters(values: Any, notebook: InspectedNotebook, *, field: str = "parameters",
                     extra: tuple[str, ...] = ()) -> dict:
    """Check job parameters against the notebook's; returns them, or raises InvalidJob.

    Every key must be a parameter of the notebook (or one of `extra`, e.g. a watch
    trigger's file parameter) and fit its type.
    """
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InvalidJob(field, f"must be an object of name: value, got {_json_name(values)}")
    known = {p.name for p in notebook.parameters} | set(extra)
    for name, value in values.items():
        if name not in known:
            names = ", ".join(sorted(known)) or "none (the notebook has no cell tagged 'parameters')"
            raise InvalidJob(f"{field}.{name}", f"the notebook has no such parameter; its parameters: {names}")
        param = notebook.parameter(name)
        if param is None or value is None:
            continue
        check = TYPE_CHECKS.get(_base_type(param.type))
        if check is not None and not check(value):
            raise InvalidJob(
                f"{field}.{name}",
                f"must be {_a(param.type)} (the notebook's default is {param.default}), got {_json_name(value)} {json.dumps(value)[:80]}",
            )
    return dict(values)


def _base_type(annotation: str) -> str:
    # "list[int]" -> "list", "Optional[int]" stays unknown (no check)
    return annotation.split("[", 1)[0].strip()


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    return JSON_NAMES.get(type(value), type(value).__name__)
