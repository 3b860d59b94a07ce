"""The models service's parts without a hub: request bodies checked against signatures,
archives, routing (aliases, canaries), stats, reading an MLmodel, the settings, the hub
configuration, the container command line, and the adaptive batching of a
`VersionServer` talking to a real worker process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from traitlets.config import Config

from hubforge.exceptions import SettingsError
from hubforge.models.archive import pack, unpack
from hubforge.services import free_port
from hubforge.models.backends import THREAD_ENV, ContainerBackend, WorkerSpec
from hubforge.models.errors import InvalidArchive, InvalidInput, ModelError, PredictFailed
from hubforge.models.manager import read_mlmodel
from hubforge.models.protocol import encode, read_frame
from hubforge.models.serving import LATENCY_EDGES, Route, Stats, VersionServer
from hubforge.models.settings import ModelsSettings
from hubforge.models.signature import InputSchema, merge

with warnings.catch_warnings():
    # MLflow warns at import about type hints of its own classes; not ours to fix.
    warnings.simplefilter("ignore")
    import mlflow.pyfunc


def save_model(model, path, example) -> Path:
    """`hubforge.models.client.save`, without the warnings MLflow raises from its own code
    (pandas 3 deprecations, hints about integer columns and type hints)."""
    from hubforge.models.client import save

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save(model, str(path), input_example=example)
    return Path(path)


def doubler():
    """A PythonModel returning 2x, raising ValueError for the magic input 666.

    Made inside a function so that cloudpickle saves the class by value: the worker
    process cannot import this test module."""

    class DoublesOrRaises(mlflow.pyfunc.PythonModel):
        # The type hint spares a warning MLflow raises for a predict without one.
        def predict(self, context, model_input: pd.DataFrame, params=None):
            if (model_input["x"] == 666).any():
                raise ValueError("666 is the number I refuse\nand this second line stays in the worker")
            return model_input["x"] * 2

    return DoublesOrRaises()


MIXED = [
    {"type": "long", "name": "age", "required": True},
    {"type": "double", "name": "income", "required": True},
    {"type": "string", "name": "plan", "required": True},
    {"type": "boolean", "name": "active", "required": True},
    {"type": "string", "name": "note", "required": False},
]
ROW = {"age": 41, "income": 1.5, "plan": "pro", "active": True, "note": "x"}
ROW2 = {"age": 37, "income": 2, "plan": "basic", "active": False, "note": None}
COLUMNS = {"age": [41, 37], "income": [1.5, 2], "plan": ["pro", "basic"], "active": [True, False], "note": ["x", None]}


def parse(body, inputs=MIXED, max_rows=10_000):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return InputSchema(inputs, max_rows).parse(data)


# --- request bodies ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"dataframe_records": [ROW, ROW2]},
    {"records": [ROW, ROW2]},
    [ROW, ROW2],
    {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values()), list(ROW2.values())]}},
    # another column order, and a column the signature does not name (dropped)
    {"dataframe_split": {"columns": ["extra", "plan", "note", "active", "age", "income"],
                         "data": [[0, "pro", "x", True, 41, 1.5], [0, "basic", None, False, 37, 2]]}},
    {"columns": COLUMNS},
    {"inputs": {**COLUMNS, "extra": [1, 2]}},
    {"dataframe_records": [{**ROW, "extra": 1}, {k: v for k, v in ROW2.items() if k != "note"}]},
])
def test_every_body_shape_gives_the_same_columns(body):
    assert parse(body) == ({"columns": COLUMNS}, 2)


def test_a_model_without_signature_takes_any_records():
    schema = InputSchema(None)
    assert schema.parse(b'[{"a": 1}, {"b": "x", "a": 2}]') == ({"columns": {"a": [1, 2], "b": [None, "x"]}}, 2)
    split = b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"]]}}'
    assert schema.parse(split) == ({"columns": {"a": [1], "b": ["x"]}}, 1)
    assert schema.parse(b'{"columns": {"a": [1, 2]}}') == ({"columns": {"a": [1, 2]}}, 2)


def test_numbers_and_types():
    # A whole number is a double; 2.0 is not a long; true is not a number.
    assert parse({"dataframe_records": [{**ROW, "income": 3}]})[0]["columns"]["income"] == [3]
    with pytest.raises(InvalidInput, match=r"dataframe_records\[0\]\.age: column 'age' expects a whole number \(long\), got 41\.0"):
        parse({"dataframe_records": [{**ROW, "age": 41.0}]})
    with pytest.raises(InvalidInput, match=r"dataframe_records\[0\]\.income: column 'income' expects a number \(double\), got true"):
        parse({"dataframe_records": [{**ROW, "income": True}]})
    with pytest.raises(InvalidInput, match=r"column 'income' expects a number \(double\), got Infinity"):
        parse(b'{"dataframe_records": [{"age": 1, "income": Infinity, "plan": "a", "active": true}]}')


@pytest.mark.parametrize("body,message", [
    # a missing column, in each shape, names the row and the column
    ({"dataframe_records": [ROW, {k: v for k, v in ROW2.items() if k != "plan"}]},
     "dataframe_records[1].plan: missing required column 'plan' (string): no such column"),
    ({"dataframe_split": {"columns": ["age", "income", "active"], "data": [[1, 1.0, True]]}},
     "dataframe_split.data[0].plan: missing required column 'plan' (string): no such column"),
    ({"columns": {"age": [1], "income": [1.0], "plan": ["a"]}},
     "columns.active[0]: missing required column 'active' (boolean): no such column"),
    # null
    ({"dataframe_records": [{**ROW, "plan": None}]},
     "dataframe_records[0].plan: missing required column 'plan' (string): no value (null)"),
    ({"columns": {**COLUMNS, "age": [41, None]}},
     "columns.age[1]: missing required column 'age' (long): no value (null)"),
    # the wrong type
    ({"dataframe_records": [ROW, {**ROW2, "age": "old"}]},
     "dataframe_records[1].age: column 'age' expects a whole number (long), got \"old\""),
    ({"dataframe_split": {"columns": list(ROW), "data": [[41, 1.5, 7, True, None]]}},
     "dataframe_split.data[0].plan: column 'plan' expects a string (string), got 7"),
    ({"columns": {**COLUMNS, "active": [True, "yes"]}},
     "columns.active[1]: column 'active' expects true or false (boolean), got \"yes\""),
    ({"dataframe_records": [{**ROW, "plan": "p" * 100}, {**ROW, "age": "a" * 100}]},
     'dataframe_records[1].age: column \'age\' expects a whole number (long), got "' + "a" * 39 + "..."),
    # the wrong envelope
    ({"data": [ROW]}, "the body must be JSON in one of these shapes"),
    ("just a string", "the body must be JSON in one of these shapes"),
    ({"inputs": [[1, 2]]}, "the body must be JSON in one of these shapes"),
    ({"dataframe_records": ROW}, "dataframe_records must be a list of records (JSON objects), got an object"),
    ({"records": [ROW, [1, 2]]}, "records[1] must be a JSON object of column: value, got a list"),
    ([ROW, "row"], "body[1] must be a JSON object of column: value, got a string"),
    ({"dataframe_split": [[1]]}, 'dataframe_split must be an object {"columns": [...], "data": [[...], ...]}'),
    ({"dataframe_split": {"columns": "age", "data": [[1]]}}, "dataframe_split.columns must be a list of column names"),
    ({"dataframe_split": {"columns": ["age", "plan"], "data": [[1, "a"], [1]]}},
     "dataframe_split.data[1] must be a list of 2 values, one per column"),
    ({"columns": {**COLUMNS, "age": 41}}, "columns.age must be a list of values"),
    ({"columns": {**COLUMNS, "age": [1, 2, 3]}}, "columns: every column must hold the same number of values, got [2, 3]"),
    ({"dataframe_records": []}, "the request holds no rows"),
])
def test_bad_bodies_name_the_field(body, message):
    with pytest.raises(InvalidInput) as e:
        parse(body)
    assert message in str(e.value)
    assert e.value.status_code == 400


@pytest.mark.parametrize("body,message", [
    (b'{"dataframe_records": [', "the request body is not valid JSON"),
    (b"", "the request body is not valid JSON"),
    (b"\xff\xfe\x00", "the request body is not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "the request body is nested too deeply"),
])
def test_bodies_that_are_not_json(body, message):
    with pytest.raises(InvalidInput, match=re.escape(message)) as e:
        parse(body)
    assert e.value.status_code == 400


def test_too_many_rows_is_413_and_names_the_setting():
    assert parse({"dataframe_records": [ROW] * 3}, max_rows=3)[1] == 3
    for body in ({"dataframe_records": [ROW] * 4}, {"columns": {k: v * 2 for k, v in COLUMNS.items()}}):
        with pytest.raises(InvalidInput) as e:
            parse(body, max_rows=3)
        assert e.value.status_code == 413
        assert str(e.value) == "the request holds 4 rows; the most one request may send is 3 (models.max_request_rows)"
    with pytest.raises(InvalidInput) as e:
        parse({"inputs": [[1.0]] * 4}, inputs=[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 1]}}],
              max_rows=3)
    assert e.value.status_code == 413


TENSOR = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]


@pytest.mark.parametrize("body", [
    {"inputs": [[1, 2, 3.5], [4, 5, 6]]},
    {"instances": [[1, 2, 3.5], [4, 5, 6]]},
    [[1, 2, 3.5], [4, 5, 6]],
    {"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 3.5], [4, 5, 6]]}},
])
def test_tensor_signatures(body):
    assert parse(body, TENSOR) == ({"tensor": [[1, 2, 3.5], [4, 5, 6]], "dtype": "float32"}, 2)


def test_tensor_errors_and_shapes():
    with pytest.raises(InvalidInput, match=r"inputs\[1\] must hold 3 numbers, got 2"):
        parse({"inputs": [[1, 2, 3], [1, 2]]}, TENSOR)
    with pytest.raises(InvalidInput, match=r'inputs\[0\]\[2\]: expected a number, got "x"'):
        parse({"inputs": [[1, 2, "x"]]}, TENSOR)
    with pytest.raises(InvalidInput, match=r'this model takes a tensor: send \{"inputs"'):
        parse({"dataframe_records": [{"a": 1}]}, TENSOR)
    # A one-dimensional tensor takes bare numbers.
    flat = [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]
    assert parse({"inputs": [1, 2.5]}, flat) == ({"tensor": [1, 2.5], "dtype": "float64"}, 2)
    assert InputSchema(TENSOR).example_row() == [0.0, 0.0, 0.0]
    assert InputSchema(TENSOR).json_schema() == {"type": "array", "items": {"type": "number"}}


def test_signatures_that_cannot_be_served():
    with pytest.raises(ValueError, match="one unnamed tensor"):
        InputSchema(TENSOR * 2)
    with pytest.raises(ValueError, match="one unnamed tensor"):
        InputSchema([{**TENSOR[0], "name": "pixels"}])
    with pytest.raises(ValueError, match="must be named"):
        InputSchema([{"type": "double", "name": ""}])


def test_descriptions_of_a_column_signature():
    schema = InputSchema(MIXED)
    assert schema.example_row() == {"age": 1, "income": 0.5, "plan": "text", "active": True, "note": "text"}
    described = schema.json_schema()
    assert described["required"] == ["age", "income", "plan", "active"]
    assert described["properties"]["age"] == {"type": "integer", "description": "MLflow type long"}


def test_merge():
    a, _ = parse({"dataframe_records": [ROW]})
    b, _ = parse({"dataframe_records": [ROW2, ROW]})
    assert merge([a]) is a
    assert merge([a, b]) == {"columns": {k: [ROW[k], ROW2[k], ROW[k]] for k in ROW}}
    # Without a signature: the union of the columns, None where a request had none.
    assert merge([{"columns": {"a": [1, 2]}}, {"columns": {"b": [3]}}, {"columns": {"a": [4]}}]) == {
        "columns": {"a": [1, 2, None, 4], "b": [None, None, 3, None]}}
    t1, _ = parse({"inputs": [[1, 2, 3]]}, TENSOR)
    t2, _ = parse({"inputs": [[4, 5, 6], [7, 8, 9]]}, TENSOR)
    assert merge([t1, t2]) == {"tensor": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], "dtype": "float32"}


# --- archives ----------------------------------------------------------------------------


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def member(name: str, type_=tarfile.REGTYPE, linkname: str = "", data: bytes | None = b"data"):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info, (data if type_ == tarfile.REGTYPE else None)


@pytest.mark.parametrize("bad,words", [
    (member("link", tarfile.SYMTYPE, "/etc/shadow"), "is not a regular file or folder (links and devices are refused)"),
    (member("hard", tarfile.LNKTYPE, "MLmodel"), "is not a regular file or folder"),
    (member("tty", tarfile.CHRTYPE), "is not a regular file or folder"),
    (member("disk", tarfile.BLKTYPE), "is not a regular file or folder"),
    (member("pipe", tarfile.FIFOTYPE), "is not a regular file or folder"),
    (member("/etc/cron.d/evil"), "points outside the model folder"),
    (member("code/../../evil"), "points outside the model folder"),
    (member("code/../code/../../../evil"), "points outside the model folder"),
])
def test_unpack_refuses_what_could_escape_the_folder(tmp_path, bad, words):
    dest = tmp_path / "model"
    dest.mkdir()
    with pytest.raises(InvalidArchive) as e:
        unpack(tar_gz(member("MLmodel"), bad), dest, max_bytes=2**20)
    assert words in str(e.value) and repr(bad[0].name) in str(e.value)
    assert e.value.status_code == 400
    assert not (tmp_path / "evil").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_unpack_refuses_oversize_archives_duplicates_and_garbage(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(InvalidArchive) as e:
        unpack(tar_gz(member("a", data=b"x" * 600), member("b", data=b"x" * 600)), tmp_path / "a", max_bytes=1000)
    assert e.value.status_code == 413 and "unpacks to more than" in str(e.value)
    (tmp_path / "b").mkdir()
    with pytest.raises(InvalidArchive, match=r"holds .* twice"):
        unpack(tar_gz(member("MLmodel"), member("MLmodel")), tmp_path / "b", max_bytes=2**20)
    (tmp_path / "c").mkdir()
    for garbage in (b"not a tarball", b"", b"\x1f\x8b\x08\x00garbage"):
        with pytest.raises(InvalidArchive, match="not a readable tar.gz archive") as e:
            unpack(io.BytesIO(garbage), tmp_path / "c", max_bytes=2**20)
        assert e.value.status_code == 400


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_pack_and_unpack_round_trip(tmp_path):
    src = tmp_path / "src"
    (src / "code" / "deep").mkdir(parents=True)
    (src / "MLmodel").write_text("flavors: {}\n")
    (src / "model.pkl").write_bytes(os.urandom(100_000))
    (src / "code" / "deep" / "helper.py").write_text("X = 1\n")
    (src / "code" / ".hidden-inside").write_text("kept\n")
    (src / "empty").mkdir()
    (src / "link").symlink_to("/etc/passwd")  # pack leaves links out
    blob = pack(src)
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(io.BytesIO(blob), dest, max_bytes=2**20)
    expected = tree(src)
    del expected["link"]
    assert tree(dest) == expected
    assert (dest / "model.pkl").stat().st_mode & 0o777 == 0o644
    # What a `tar czf model.tar.gz -C dir .` makes (names starting with ./) unpacks too.
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    unpack(tar_gz(member("./", tarfile.DIRTYPE), member("./MLmodel", data=b"m"), member("./code/x.py", data=b"y")), dotted, 2**20)
    assert tree(dotted) == {"MLmodel": b"m", "code": None, "code/x.py": b"y"}


# --- routing -------------------------------------------------------------------------------


def test_route_default_is_production_else_latest():
    route = Route(latest=3)
    assert route.resolve(None) == (3, None)
    route.aliases = {"staging": 2}
    assert route.resolve(None) == (3, None)
    route.aliases["production"] = 1
    assert route.resolve(None) == (1, "production")
    assert route.resolve("staging") == (2, "staging")
    assert route.resolve("v7") == (7, None)  # existence is checked where the version loads
    with pytest.raises(ModelError, match="the model has no alias 'canary'") as e:
        route.resolve("canary")
    assert e.value.status_code == 404
    with pytest.raises(ModelError, match="the model has no versions") as e:
        Route().resolve(None)
    assert e.value.status_code == 404


def draws(route: Route, selector: str | None, n: int = 2000) -> list[int]:
    return [route.resolve(selector)[0] for _ in range(n)]


def test_canary_percentages():
    route = Route(latest=2, aliases={"production": 1, "staging": 1})
    route.canaries = {"production": (2, 0.0)}
    assert set(draws(route, None)) == {1}
    route.canaries = {"production": (2, 100.0)}
    assert set(draws(route, None)) == {2}
    assert set(draws(route, "production")) == {2}
    assert set(draws(route, "staging")) == {1}  # another alias's canary does not apply
    assert set(draws(route, "v1")) == {1}  # nor to a version called by number
    route.canaries = {"production": (2, 30.0)}
    got = draws(route, None)
    # 600 expected, standard deviation about 20: these bounds are six of them each way.
    assert 480 <= got.count(2) <= 720, got.count(2)
    assert route.resolve("production")[1] == "production"


def test_referenced_versions():
    assert Route(latest=3).referenced() == {3}
    assert Route().referenced() == set()
    assert Route(latest=3, aliases={"staging": 2}).referenced() == {2, 3}
    assert Route(latest=3, aliases={"production": 1}).referenced() == {1}
    route = Route(latest=5, aliases={"production": 1, "staging": 2}, canaries={"production": (4, 10.0)})
    assert route.referenced() == {1, 2, 4}


# --- stats ---------------------------------------------------------------------------------


def upper_edge(ms: float) -> float:
    return round(min((e for e in LATENCY_EDGES if e >= ms), default=LATENCY_EDGES[-1]), 2)


def test_stats_series_and_percentiles():
    stats = Stats(window_seconds=900)
    assert stats.buckets.maxlen == 180
    assert stats.series() == {"interval": 5, "series": [], "rate": 0.0, "p50_ms": None, "p99_ms": None}
    for _ in range(98):
        stats.record(1, 3.0, True)
    stats.record(1, 900.0, False)
    stats.record(1, 10**6, False)  # beyond the last edge: the last bucket
    for _ in range(10):
        stats.record(2, 50.0, True)
    series = stats.series()
    by_version = {s["version"]: s["points"] for s in series["series"]}
    assert sorted(by_version) == [1, 2]
    # The records may straddle a 5-second bucket: add the points up.
    assert sum(p["requests"] for p in by_version[1]) == 100
    assert sum(p["errors"] for p in by_version[1]) == 2
    assert sum(p["errors"] for p in by_version[2]) == 0
    if len(by_version[1]) == 1:
        point = by_version[1][0]
        assert point["p50_ms"] == upper_edge(3.0) and point["p99_ms"] == upper_edge(900.0)
        assert point["rate"] == 20.0 and point["t"] % 5 == 0
    assert series["rate"] == round(110 / 60, 2)
    assert series["p50_ms"] == upper_edge(3.0)
    assert series["p99_ms"] == upper_edge(900.0)
    assert upper_edge(10**6) == round(LATENCY_EDGES[-1], 2)


def test_stats_keep_their_window():
    stats = Stats(window_seconds=10)
    assert stats.buckets.maxlen == 2
    assert Stats(window_seconds=1).buckets.maxlen == 1


# --- MLmodel -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory):
    """A scikit-learn pipeline on int, float, str and bool columns, saved as MLflow."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(7)
    n = 120
    df = pd.DataFrame({"age": rng.integers(18, 80, n), "income": rng.normal(50, 10, n),
                       "plan": rng.choice(["basic", "pro", "team"], n), "active": rng.random(n) > 0.5})
    y = ((df["age"] > 45) ^ (df["plan"] == "pro")).astype(int)
    pre = ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "active"])])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(df, y)
    path = save_model(model, tmp_path_factory.mktemp("mixed") / "model", df)
    return SimpleNamespace(model=model, df=df, path=path)


def test_read_mlmodel_of_a_saved_model(mixed_model):
    meta = read_mlmodel(mixed_model.path)
    assert meta["flavors"] == ["python_function", "sklearn"]
    assert meta["signature"]["inputs"] == [
        {"type": "long", "name": "age", "required": True},
        {"type": "double", "name": "income", "required": True},
        {"type": "string", "name": "plan", "required": True},
        {"type": "boolean", "name": "active", "required": True},
    ]
    assert any(r.startswith("scikit-learn==") for r in meta["requirements"])
    assert any(r.startswith("mlflow") for r in meta["requirements"])


def broken_copy(src: Path, dest: Path, edit) -> Path:
    dest.mkdir()
    for p in src.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    edit(dest / "MLmodel")
    return dest


def mlmodel_edit(text: str):
    def edit(path: Path):
        path.write_text(text)
    return edit


@pytest.mark.parametrize("edit,words", [
    (lambda p: p.unlink(), "the archive holds no MLmodel file at its top level"),
    (lambda p: (p.unlink(), p.mkdir()), "the archive holds no MLmodel file"),
    (mlmodel_edit("flavors: [unclosed\n"), "MLmodel is not valid YAML"),
    (lambda p: p.write_bytes(b"flavors: \xff\xfe\n"), "MLmodel is not valid YAML"),
    (mlmodel_edit("flavors:\n  sklearn: {pickled_model: model.pkl}\n"), "MLmodel has no python_function flavour"),
    (mlmodel_edit("- just\n- a list\n"), "MLmodel has no python_function flavour"),
    (mlmodel_edit(""), "MLmodel has no python_function flavour"),
    (mlmodel_edit("flavors: {python_function: {}}\nsignature: {inputs: 'not json'}\n"),
     "MLmodel signature.inputs: cannot be served"),
    (mlmodel_edit("flavors: {python_function: {}}\nsignature: {inputs: '{\"a\": 1}'}\n"),
     "MLmodel signature.inputs: cannot be served"),
    (mlmodel_edit("flavors: {python_function: {}}\nsignature: {inputs: '[{\"type\": \"double\"}]'}\n"),
     "MLmodel signature.inputs: cannot be served"),
    (mlmodel_edit('flavors: {python_function: {}}\nsignature: {inputs: \'[{"type": "tensor", "tensor-spec": {}},'
                  ' {"type": "tensor", "tensor-spec": {}}]\'}\n'),
     "MLmodel signature.inputs: cannot be served: only signatures with one unnamed tensor input are served"),
])
def test_read_mlmodel_refuses_broken_models(mixed_model, tmp_path, edit, words):
    path = broken_copy(mixed_model.path, tmp_path / "broken", edit)
    with pytest.raises(InvalidArchive) as e:
        read_mlmodel(path)
    assert words in str(e.value)
    assert e.value.status_code == 400


def test_read_mlmodel_without_signature(mixed_model, tmp_path):
    path = broken_copy(mixed_model.path, tmp_path / "nosig",
                       mlmodel_edit("flavors: {python_function: {loader_module: mlflow.sklearn}}\n"))
    (path / "requirements.txt").write_text("# a comment\n\nnumpy==2\n")
    assert read_mlmodel(path) == {"signature": None, "requirements": ["numpy==2"], "flavors": ["python_function"]}


# --- settings and the hub configuration ----------------------------------------------------


def from_settings(models: dict) -> ModelsSettings:
    return ModelsSettings.from_settings(SimpleNamespace(models=models, source="/etc/hubforge.yaml"))


@pytest.mark.parametrize("models,message", [
    ({"max_batch": 3}, "/etc/hubforge.yaml: models.max_batch: unknown setting; known: "),
    ({"sample_rate": 1.5}, "/etc/hubforge.yaml: models.sample_rate: must be from 0 to 1, got 1.5"),
    ({"max_batch_size": 0}, "/etc/hubforge.yaml: models.max_batch_size: must be 1 or more, got 0"),
    ({"max_request_rows": -1}, "models.max_request_rows: must be 1 or more"),
    ({"max_loaded_versions": 0}, "models.max_loaded_versions: must be 1 or more"),
    ({"max_batch_size": "many"}, "/etc/hubforge.yaml: models.max_batch_size: invalid value 'many'"),
    ({"invoke_scopes": ["Churn Model"]}, "models.invoke_scopes: 'Churn Model' is not a model name"),
    ({"invoke_scopes": [3]}, "models.invoke_scopes: invalid value [3]"),
    ({"sample_rate": "often"}, "models.sample_rate: invalid value 'often'"),
])
def test_models_settings_errors_name_the_file_and_key(models, message):
    with pytest.raises(SettingsError) as e:
        from_settings(models)
    assert message in str(e.value)


def test_models_settings_defaults_and_values():
    assert from_settings({}).to_json()["max_batch_size"] == 64
    assert ModelsSettings.from_settings(SimpleNamespace(source="x.yaml")).max_batch_size == 64  # no section
    s = from_settings({"max_batch_size": 8, "sample_rate": 0, "invoke_scopes": ["churn", "fraud_v2"]})
    assert (s.max_batch_size, s.sample_rate, s.invoke_scopes) == (8, 0, ["churn", "fraud_v2"])


def hub_config(tmp_path, **models):
    """The hub configuration of the repo's settings file, with a temporary data_dir."""
    from hubforge.hub.config import configure
    from hubforge.settings import DEFAULT_SETTINGS_FILE, Settings

    settings = Settings.load(DEFAULT_SETTINGS_FILE)
    settings.data_dir = str(tmp_path / "state")
    if models:
        settings.models = models
    c = Config()
    configure(c, settings)
    return c


def test_hub_config_declares_the_service_its_scopes_and_grants(tmp_path):
    c = hub_config(tmp_path, invoke_scopes=["churn"], max_batch_size=16)
    [service] = [s for s in c.JupyterHub.services if s["name"] == "models"]
    assert service["command"] == [sys.executable, "-m", "hubforge.models"]
    assert service["url"].startswith("http://127.0.0.1:")
    assert service["oauth_client_allowed_scopes"] == ["custom:hubforge:models:read", "custom:hubforge:models:write"]
    config = json.loads(service["environment"]["HUBFORGE_MODELS_CONFIG"])
    assert config["models_dir"] == str((tmp_path / "state").resolve() / "models")
    assert config["mode"] == "local" and config["public_url"] == "http://127.0.0.1:8000"
    assert config["settings"]["max_batch_size"] == 16 and config["settings"]["invoke_scopes"] == ["churn"]
    assert "db_url" not in config["settings"]
    assert config["local"]["shared_home_root"] == str((tmp_path / "state").resolve() / "homes")
    assert config["local"]["isolation"] == ("system-users" if os.geteuid() == 0 else "shared")

    scopes = c.JupyterHub.custom_scopes
    assert scopes["custom:hubforge:models:write"]["subscopes"] == ["custom:hubforge:models:read"]
    for name in ("read", "write", "invoke", "invoke:churn"):
        assert scopes[f"custom:hubforge:models:{name}"]["description"]
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    wanted = {"custom:hubforge:models:read", "custom:hubforge:models:write", "custom:hubforge:models:invoke",
              "access:services!service=models", "read:services!service=models"}
    for role in ("user", "server"):
        assert wanted <= set(roles[role]["scopes"]), role
        # The per-model scope is for admins to grant, never a default.
        assert "custom:hubforge:models:invoke:churn" not in roles[role]["scopes"]
    assert "read:metrics" not in roles["user"]["scopes"]
    assert not any("models" in r.get("services", ()) for r in roles.values())  # the service needs no role


def test_hub_config_without_the_service(tmp_path):
    c = hub_config(tmp_path, enabled=False)
    assert "models" not in [s["name"] for s in c.JupyterHub.services]
    assert not any(k.startswith("custom:hubforge:models") for k in c.JupyterHub.get("custom_scopes", {}))
    with pytest.raises(SettingsError, match="models.batch: unknown setting"):
        hub_config(tmp_path, batch=3)


# --- the container command line --------------------------------------------------------------


def test_container_command(tmp_path):
    backend = ContainerBackend(str(tmp_path / "logs"), engine="podman", image="localhost/hubforge/cpu:1",
                               cpus=1.5, memory="1g")
    spec = WorkerSpec(model="churn_x", version=3, owner="ann", key="s3cret-key",
                      fetch_url="http://127.0.0.1:9000/services/models/internal/archive")
    name = backend.container_name(spec)
    assert re.fullmatch(r"hubforge-model-churn-x-v3-[0-9a-f]{6}", name)
    command = backend.command(spec, name)
    assert command == [
        "podman", "run", "--rm", "-i", "--name", name, "--network", "host",
        "--label", "hubforge.role=model", "--label", "hubforge.model=churn_x",
        "--label", "hubforge.model-version=3", "--label", "hubforge.owner=ann",
        "--cpus=1.5", "--memory=1g", "--security-opt", "no-new-privileges", "--cap-drop", "ALL",
        *[f"--env={k}=1" for k in sorted(THREAD_ENV)],
        "localhost/hubforge/cpu:1",
        "python", "-m", "hubforge.models.worker", "--fetch", spec.fetch_url,
        "--listen", "127.0.0.1:0", "--key-file", "-",
    ]
    assert not any("s3cret" in part for part in command)  # the key goes on standard input
    spec.image = "registry/own:2"
    assert backend.command(spec, name)[-10] == "registry/own:2"


# --- a VersionServer and a real worker ------------------------------------------------------------


def start_worker(path: Path, key: str, log_path: Path) -> tuple[subprocess.Popen, int]:
    """A real worker process of the model at `path`, and the port it listens on."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubforge.models.worker", "--model-dir", str(path), "--listen", "127.0.0.1:0",
             "--key-file", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env={**os.environ, **THREAD_ENV},
        )
    proc.stdin.write(key.encode() + b"\n")
    proc.stdin.close()
    for line in proc.stdout:  # ends when the worker exits
        match = re.search(rb"hubforge-model-worker listening on (\d+)", line)
        if match:
            return proc, int(match.group(1))
    stop_worker(proc)
    raise AssertionError(log_path.read_text()[-3000:])


def stop_worker(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(30)
    proc.stdout.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """A real worker process of the doubling model; ``(port, key)``."""
    path = save_model(doubler(), tmp_path_factory.mktemp("doubler") / "model", pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    key = secrets.token_urlsafe(24)
    proc, port = start_worker(path, key, path.parent / "worker.log")
    try:
        yield port, key
    finally:
        stop_worker(proc)


class RecordingVersionServer(VersionServer):
    """A VersionServer that records how many rows each call to its worker carried."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    async def _call(self, payload, link):
        self.calls.append(len(payload["columns"]["x"]))
        return await super()._call(payload, link)


DOUBLER_SCHEMA = InputSchema([{"type": "double", "name": "x", "required": True}])


async def connected(worker, max_batch: int) -> RecordingVersionServer:
    port, key = worker
    server = RecordingVersionServer("doubler", 1, DOUBLER_SCHEMA, max_batch=max_batch, timeout=60)
    await server.connect("127.0.0.1", port, key)
    assert server.state == "ready"
    return server


def request(*xs: float) -> tuple[dict, int]:
    return DOUBLER_SCHEMA.parse(json.dumps({"dataframe_records": [{"x": x} for x in xs]}).encode())


async def test_requests_that_wait_are_batched(worker):
    server = await connected(worker, max_batch=8)
    try:
        first = server.submit(*request(0.5))
        await asyncio.sleep(0)  # the idle server sends the first request at once, alone
        rest = [server.submit(*request(float(i))) for i in range(1, 30)]
        # One request larger than a batch goes whole, on its own.
        big = server.submit(*request(*[float(i) for i in range(10)]))
        results = await asyncio.wait_for(asyncio.gather(first, *rest, big), 60)
        assert server.calls == [1, 8, 8, 8, 5, 10]
        # The same predictions as the model in this process.
        local = doubler()
        assert results[0] == local.predict(None, pd.DataFrame({"x": [0.5]})).tolist()
        assert results[1:30] == [local.predict(None, pd.DataFrame({"x": [float(i)]})).tolist() for i in range(1, 30)]
        assert results[30] == [2.0 * i for i in range(10)]
    finally:
        server.close()


async def test_a_model_error_fails_only_its_request(worker):
    server = await connected(worker, max_batch=64)
    try:
        first = server.submit(*request(1.0))
        await asyncio.sleep(0)
        batch = [server.submit(*request(float(x))) for x in (2, 3, 666, 4, 5)]
        results = await asyncio.wait_for(asyncio.gather(first, *batch, return_exceptions=True), 60)
        # The batch of five failed as a whole, then each was predicted alone.
        assert server.calls == [1, 5, 1, 1, 1, 1, 1]
        assert results[:3] == [[2.0], [4.0], [6.0]] and results[4:] == [[8.0], [10.0]]
        error = results[3]
        assert isinstance(error, PredictFailed) and error.status_code == 422
        assert str(error) == "the model could not predict: ValueError: 666 is the number I refuse"
        assert server.state == "ready"
        assert await server.submit(*request(7.0)) == [14.0]
    finally:
        server.close()


async def test_a_wrong_key_gets_no_answer(worker):
    port, key = worker
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode({"key": key[:-1] + ("A" if key[-1] != "A" else "B")}))
        writer.write(encode({"columns": {"x": [1.0]}}))
        await writer.drain()
        with pytest.raises(asyncio.IncompleteReadError) as e:
            await asyncio.wait_for(read_frame(reader), 30)
        assert e.value.partial == b""
    finally:
        writer.close()
    server = RecordingVersionServer("doubler", 1, DOUBLER_SCHEMA, max_batch=8, timeout=60)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await server.connect("127.0.0.1", port, "not-the-key")
    assert server.state == "loading"
    with pytest.raises(PredictFailed) as e:
        server.submit(*request(1.0))
    assert e.value.status_code == 503
    server.close()


# --- a VersionServer and several workers (a version's pods on Kubernetes) -----------------


def slow_pid_model():
    """A PythonModel answering ``"<pid> <start> <end>"`` for each row: its process id and
    when its predict call began and ended (it sleeps 0.2 s, so that the batches of two
    workers can be seen to overlap)."""

    class Pid(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: pd.DataFrame, params=None):
            import os
            import time

            start = time.time()
            time.sleep(0.2)
            return [f"{os.getpid()} {start} {time.time()}"] * len(model_input)

    return Pid()


def pids(answers: list) -> set[int]:
    return {int(row.split()[0]) for answer in answers for row in answer}


@pytest.fixture
def pid_workers(tmp_path):
    """Two real worker processes of `slow_pid_model`; ``(key, {address: process})``."""
    path = save_model(slow_pid_model(), tmp_path / "model", pd.DataFrame({"x": [1.0, 2.0]}))
    key = secrets.token_urlsafe(24)
    started = {}
    try:
        for n in range(2):
            proc, port = start_worker(path, key, tmp_path / f"worker{n}.log")
            started[("127.0.0.1", port)] = proc
        yield key, started
    finally:
        for proc in started.values():
            if proc.poll() is None:
                stop_worker(proc)


async def calls(server, n: int) -> list:
    """`n` one-row requests at once: their answers (or errors)."""
    futures = [server.submit(*request(float(i))) for i in range(n)]
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 60)


async def serving_both(pid_workers) -> tuple[RecordingVersionServer, tuple, tuple]:
    """A server connected to the first worker, then given both; and ``(address, process)``
    of each worker."""
    key, procs = pid_workers
    (a, proc_a), (b, proc_b) = procs.items()
    server = RecordingVersionServer("pids", 1, DOUBLER_SCHEMA, max_batch=4, timeout=60)
    await server.connect(*a, key)
    await server.set_endpoints([a, b])
    return server, (a, proc_a), (b, proc_b)


async def test_batches_go_to_every_worker_of_the_version(pid_workers):
    server, (a, proc_a), (b, proc_b) = await serving_both(pid_workers)
    try:
        assert server.endpoints == [a, b]
        answers = await calls(server, 16)
        assert pids(answers) == {proc_a.pid, proc_b.pid}
        assert sum(server.calls) == 16 and max(server.calls) <= 4
        # The two predicted at the same time: a batch of one began before a batch of the
        # other ended.
        spans = {(int(pid), float(start), float(end))
                 for answer in answers for pid, start, end in (row.split() for row in answer)}
        assert any(pid != other and start < other_end and other_start < end
                   for pid, start, end in spans for other, other_start, other_end in spans), spans
    finally:
        server.close()


async def test_a_worker_that_leaves_the_endpoints_finishes_its_batch_first(pid_workers):
    server, (a, proc_a), (b, proc_b) = await serving_both(pid_workers)
    try:
        load = asyncio.ensure_future(calls(server, 16))
        await asyncio.sleep(0.1)  # both workers have a batch in flight
        await server.set_endpoints([b])
        answers = await load
        assert all(isinstance(answer, list) for answer in answers), answers  # none failed
        assert server.endpoints == [b]
        assert pids(await calls(server, 8)) == {proc_b.pid}
        # No list, or only workers that cannot be reached: the version keeps what it has.
        await server.set_endpoints([])
        await server.set_endpoints([("127.0.0.1", free_port())])
        assert server.endpoints == [b] and server.state == "ready"
    finally:
        server.close()


async def test_when_one_worker_dies_the_others_serve_on(pid_workers):
    server, (a, proc_a), (b, proc_b) = await serving_both(pid_workers)
    broken = []
    server.on_broken = broken.append
    try:
        proc_b.kill()
        proc_b.wait(10)
        answers = await calls(server, 16)
        failed = [answer for answer in answers if isinstance(answer, Exception)]
        # At most the batch sent to the dead worker failed, with a 502 naming why.
        assert len(failed) <= 4 and all(isinstance(e, PredictFailed) and e.status_code == 502 for e in failed)
        assert pids([answer for answer in answers if not isinstance(answer, Exception)]) == {proc_a.pid}
        assert server.state == "ready" and server.endpoints == [a] and broken == []
        assert pids(await calls(server, 4)) == {proc_a.pid}
        # The last one gone: the version is broken (the manager restarts it), and the
        # requests waiting get a 502 rather than waiting forever.
        proc_a.kill()
        proc_a.wait(10)
        answers = await calls(server, 6)
        assert all(isinstance(e, PredictFailed) and e.status_code == 502 and "being restarted" in str(e)
                   for e in answers), answers
        assert server.state == "failed" and broken == [server]
    finally:
        server.close()


async def test_the_manager_connects_each_version_to_the_workers_its_backend_lists(pid_workers, tmp_path):
    """`ModelManager.refresh_endpoints` (every 10 s in the service): a backend that can
    list a version's workers (Kubernetes: its ready pods) gets each of them a connection;
    one that cannot (local, containers) changes nothing."""
    from hubforge.models.manager import ModelManager

    key, procs = pid_workers
    (a, proc_a), (b, proc_b) = procs.items()
    listed = [a, b]

    class ListingBackend:
        async def endpoints(self, host, port):
            assert (host, port) == ("pids.hubforge.svc", 8080)  # what start() returned
            return list(listed)

    manager = ModelManager(ModelsSettings(), str(tmp_path / "models"), ListingBackend(),
                           db_url=f"sqlite:///{tmp_path / 'models.sqlite'}", fetch_base="http://127.0.0.1:1/")
    server = VersionServer("pids", 1, DOUBLER_SCHEMA, max_batch=4, timeout=60)
    await server.connect(*a, key)
    server.service_address = ("pids.hubforge.svc", 8080)
    manager.servers[("pids", 1)] = server
    try:
        await manager.refresh_endpoints()
        assert server.endpoints == [a, b]
        assert pids(await calls(server, 16)) == {proc_a.pid, proc_b.pid}
        listed[:] = [b]  # the autoscaler removed a's pod
        await manager.refresh_endpoints()
        assert server.endpoints == [b]
        manager.backend = object()  # a backend with one worker per version: nothing to do
        await manager.refresh_endpoints()
        assert server.endpoints == [b]
    finally:
        server.close()
        manager.engine.dispose()



# --- archive names: bugs these tests found (kept last so that `-x` runs the rest) ---------


@pytest.mark.parametrize("name", ["../evil", "./../evil", ".."])
def test_unpack_refuses_names_that_start_with_dot_dot(tmp_path, name):
    # The module promises "no absolute or `..` names". `unpack` strips every leading '.'
    # and '/' (`member.name.lstrip("./")`) before its `..` check, so `../evil` passes the
    # check and is written as `evil`: no escape, but the archive is not refused.
    dest = tmp_path / "model"
    dest.mkdir()
    with pytest.raises(InvalidArchive, match="points outside the model folder"):
        unpack(tar_gz(member("MLmodel"), member(name)), dest, max_bytes=2**20)


def test_round_trip_keeps_top_level_dot_files(tmp_path):
    # The same `lstrip("./")` renames a top-level `.python-version` to `python-version`.
    src = tmp_path / "src"
    src.mkdir()
    (src / "MLmodel").write_text("flavors: {}\n")
    (src / ".python-version").write_text("3.11\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    unpack(io.BytesIO(pack(src)), dest, max_bytes=2**20)
    assert tree(dest) == tree(src), "unpack renamed a top-level dot file"
