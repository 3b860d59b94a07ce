"""Predict requests checked against a model's MLflow signature, in the trusted front.

A request body is parsed and checked here, before it reaches the model's process, so a
caller learns exactly which row and column is wrong (400) and the model never sees input
its signature does not allow. Accepted bodies (MLflow's scoring formats, plus two short
forms)::

    {"dataframe_records": [{"age": 41, "plan": "pro"}, ...]}     # also "records"
    {"dataframe_split": {"columns": ["age", "plan"], "data": [[41, "pro"], ...]}}
    {"columns": {"age": [41, 37], "plan": ["pro", "basic"]}}     # also "inputs" as a dict
    [{"age": 41, "plan": "pro"}, ...]                            # a bare list of records
    {"inputs": [[0.1, 0.2], ...]}                                # tensor signatures ("instances" too)

The result is column-oriented (``{column: [values]}``) so requests batch by extending
lists. Columns the signature does not name are dropped, as MLflow's scoring server does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from .errors import InvalidInput

#: JSON checks per MLflow column type: (accepts(value), what to call it in a message).
_NUMBER = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
_WHOLE = (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number")
CHECKS = {
    "double": _NUMBER,
    "float": _NUMBER,
    "long": _WHOLE,
    "integer": _WHOLE,
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "string": (lambda v: isinstance(v, str), "a string"),
    "binary": (lambda v: isinstance(v, str), "a base64 string"),
    "datetime": (lambda v: isinstance(v, str), "an ISO 8601 date-time string"),
}
_ANY = (lambda v: True, "any value")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = True


class InputSchema:
    """The inputs a model accepts, from its MLmodel ``signature.inputs`` (JSON list).

    ``InputSchema(None)`` (a model saved without a signature) accepts any records.
    """

    def __init__(self, inputs: list[dict] | None, max_rows: int = 10_000):
        self.max_rows = max_rows
        self.tensor: dict | None = None
        self.columns: list[Column] | None = None
        if inputs:
            if all(item.get("type") == "tensor" for item in inputs):
                if len(inputs) != 1 or inputs[0].get("name"):
                    raise ValueError("only signatures with one unnamed tensor input are served")
                self.tensor = inputs[0].get("tensor-spec", {})
            else:
                self.columns = [
                    Column(str(c["name"]), str(c.get("type", "")), bool(c.get("required", True)))
                    for c in inputs
                ]
                unnamed = [c for c in self.columns if not c.name]
                if unnamed:
                    raise ValueError("signature columns must be named")

    # -- descriptions ---------------------------------------------------------------
    def example_row(self) -> dict | list:
        """A made-up row of the right types (for the OpenAPI description and curl examples)."""
        if self.tensor is not None:
            shape = self.tensor.get("shape") or [-1, 1]
            return [0.0] * (shape[1] if len(shape) > 1 and shape[1] > 0 else 1)
        samples = {"double": 0.5, "float": 0.5, "long": 1, "integer": 1, "boolean": True,
                   "string": "text", "binary": "", "datetime": "2026-01-01T00:00:00"}
        return {c.name: samples.get(c.type, None) for c in self.columns or []}

    def json_schema(self) -> dict:
        """A JSON Schema of one input record (OpenAPI's ``components.schemas``)."""
        if self.tensor is not None:
            return {"type": "array", "items": {"type": "number"}}
        types = {"double": "number", "float": "number", "long": "integer", "integer": "integer",
                 "boolean": "boolean", "string": "string", "binary": "string", "datetime": "string"}
        props = {c.name: {"type": types.get(c.type, "string"), "description": f"MLflow type {c.type}"}
                 for c in self.columns or []}
        required = [c.name for c in self.columns or [] if c.required]
        return {"type": "object", "properties": props, "required": required}

    # -- parsing --------------------------------------------------------------------
    def parse(self, body: bytes) -> tuple[dict, int]:
        """``(payload, rows)`` of a request body, or InvalidInput naming what is wrong.

        `payload` is ``{"columns": {name: [values]}}`` or ``{"tensor": [rows]}``.
        """
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidInput(f"the request body is not valid JSON: {e}") from None
        except RecursionError:
            raise InvalidInput("the request body is nested too deeply") from None
        if self.tensor is not None:
            return self._tensor(data)
        if isinstance(data, list):
            return self._records(data, "body")
        if not isinstance(data, dict):
            raise InvalidInput(_FORMATS)
        if "dataframe_records" in data or "records" in data:
            key = "dataframe_records" if "dataframe_records" in data else "records"
            return self._records(data[key], key)
        if "dataframe_split" in data:
            return self._split(data["dataframe_split"])
        for key in ("columns", "inputs"):
            if isinstance(data.get(key), dict):
                return self._columns(data[key], key)
        raise InvalidInput(_FORMATS)

    def _count(self, n: int) -> None:
        if n == 0:
            raise InvalidInput("the request holds no rows")
        if n > self.max_rows:
            raise InvalidInput(f"the request holds {n} rows; the most one request may send is {self.max_rows} "
                               "(models.max_request_rows)", 413)

    def _records(self, records, where: str) -> tuple[dict, int]:
        if not isinstance(records, list):
            raise InvalidInput(f"{where} must be a list of records (JSON objects), got {_kind(records)}")
        self._count(len(records))
        if self.columns is None:  # no signature: every key seen, in order of appearance
            names: dict[str, None] = {}
            for i, row in enumerate(records):
                if not isinstance(row, dict):
                    raise InvalidInput(f"{where}[{i}] must be a JSON object of column: value, got {_kind(row)}")
                names.update(dict.fromkeys(row))
            return {"columns": {n: [row.get(n) for row in records] for n in names}}, len(records)
        out: dict[str, list] = {c.name: [] for c in self.columns}
        for i, row in enumerate(records):
            if not isinstance(row, dict):
                raise InvalidInput(f"{where}[{i}] must be a JSON object of column: value, got {_kind(row)}")
            for column in self.columns:
                value = row.get(column.name)
                self._check(column, value, lambda: f"{where}[{i}]", column.name in row)
                out[column.name].append(value)
        return {"columns": out}, len(records)

    def _split(self, split) -> tuple[dict, int]:
        where = "dataframe_split"
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise InvalidInput(f'{where} must be an object {{"columns": [...], "data": [[...], ...]}}')
        names = split.get("columns")
        rows = split["data"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput(f"{where}.columns must be a list of column names")
        self._count(len(rows))
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(names):
                raise InvalidInput(f"{where}.data[{i}] must be a list of {len(names)} values, one per column")
        index = {n: j for j, n in enumerate(names)}
        if self.columns is None:
            return {"columns": {n: [row[j] for row in rows] for n, j in index.items()}}, len(rows)
        out = {}
        for column in self.columns:
            j = index.get(column.name)
            values = [None] * len(rows) if j is None else [row[j] for row in rows]
            for i, value in enumerate(values):
                self._check(column, value, lambda: f"{where}.data[{i}]", j is not None)
            out[column.name] = values
        return {"columns": out}, len(rows)

    def _columns(self, columns: dict, where: str) -> tuple[dict, int]:
        lengths = {len(v) for v in columns.values() if isinstance(v, list)}
        bad = [k for k, v in columns.items() if not isinstance(v, list)]
        if bad:
            raise InvalidInput(f"{where}.{bad[0]} must be a list of values")
        if len(lengths) > 1:
            raise InvalidInput(f"{where}: every column must hold the same number of values, got {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        self._count(n)
        if self.columns is None:
            return {"columns": dict(columns)}, n
        out = {}
        for column in self.columns:
            present = column.name in columns
            values = columns.get(column.name) or [None] * n
            for i, value in enumerate(values):
                self._check(column, value, lambda: f"{where}.{column.name}[{i}]", present, in_column=True)
            out[column.name] = values
        return {"columns": out}, n

    def _tensor(self, data) -> tuple[dict, int]:
        rows = None
        if isinstance(data, dict):
            rows = data.get("inputs", data.get("instances"))
            if rows is None and isinstance(data.get("dataframe_split"), dict):
                rows = data["dataframe_split"].get("data")
        elif isinstance(data, list):
            rows = data
        if not isinstance(rows, list):
            raise InvalidInput('this model takes a tensor: send {"inputs": [[...], ...]}')
        self._count(len(rows))
        shape = self.tensor.get("shape") or []
        width = shape[1] if len(shape) == 2 and shape[1] > 0 else None
        for i, row in enumerate(rows):
            values = row if isinstance(row, list) else [row]
            if width is not None and len(values) != width:
                raise InvalidInput(f"inputs[{i}] must hold {width} numbers, got {len(values)}")
            for j, v in enumerate(values):
                if not _NUMBER[0](v):
                    raise InvalidInput(f"inputs[{i}][{j}]: expected a number, got {_show(v)}")
        return {"tensor": rows, "dtype": self.tensor.get("dtype", "float64")}, len(rows)

    @staticmethod
    def _check(column: Column, value, where, present: bool, in_column: bool = False) -> None:
        if value is None:
            if column.required:
                what = "no value (null)" if present else "no such column"
                at = where() if in_column else f"{where()}.{column.name}"
                raise InvalidInput(f"{at}: missing required column '{column.name}' ({column.type}): {what}")
            return
        accepts, expected = CHECKS.get(column.type, _ANY)
        if not accepts(value) or (isinstance(value, float) and math.isinf(value)):
            at = where() if in_column else f"{where()}.{column.name}"
            raise InvalidInput(f"{at}: column '{column.name}' expects {expected} ({column.type}), got {_show(value)}")


_FORMATS = ('the body must be JSON in one of these shapes: {"dataframe_records": [{...}, ...]}, '
            '{"dataframe_split": {"columns": [...], "data": [[...]]}}, {"columns": {"name": [...]}}, '
            "or a list of records")


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _show(value) -> str:
    text = json.dumps(value)
    return (text[:40] + "...") if len(text) > 40 else text


def merge(payloads: list[dict]) -> dict:
    """One payload of several requests' payloads (all from the same schema), in order."""
    if len(payloads) == 1:
        return payloads[0]
    if "tensor" in payloads[0]:
        rows = []
        for p in payloads:
            rows.extend(p["tensor"])
        return {"tensor": rows, "dtype": payloads[0]["dtype"]}
    names: dict[str, None] = {}
    for p in payloads:  # the same columns with a signature; the union without one
        names.update(dict.fromkeys(p["columns"]))
    columns: dict[str, list] = {}
    for name in names:
        values: list = []
        for p in payloads:
            got = p["columns"].get(name)
            if got is None:
                got = [None] * len(next(iter(p["columns"].values()), []))
            values.extend(got)
        columns[name] = values
    return {"columns": columns}
