"""``hubforge models``: the command line of the models service.

Fast tests cover the parser (every command has ``--help``), the argument types, the
request bodies, the tables and the failures that need no service (no token, nothing
listening, a folder that is not an MLflow model). The ``slow`` tests run the installed
``hubforge models`` command in a subprocess against the session hub's real ``models``
service: publish, list, promote, rollback, canary, predict, share, stats, samples and
delete a real scikit-learn model, and the errors a user meets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from hubforge.cli import build_parser, main
from hubforge.models.cli import (
    format_alias,
    make_client,
    model_name,
    models_table,
    percent,
    predict_body,
    service_url,
    sharing_body,
    stats_summary,
)
from hubprocess import free_port

TOKEN = "cli-test-token-5f4dcc3b5aa765d6"
HOSTILE = "http://127.0.0.1:8000/@/space%20word/"
HUBFORGE = Path(sys.executable).parent / "hubforge"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``hubforge *argv`` in this process: (exit status, stdout, stderr)."""
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse: --help, usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


MODELS = _subcommands(build_parser())["models"]
COMMANDS = _subcommands(MODELS)
ALIAS_COMMANDS = _subcommands(COMMANDS["alias"])
EVERY_COMMAND = [[]] + [[name] for name in COMMANDS] + [["alias", name] for name in ALIAS_COMMANDS]


@pytest.fixture
def no_hub_env(monkeypatch):
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "HUBFORGE_TOKEN", "JUPYTERHUB_SERVICE_PREFIX"):
        monkeypatch.delenv(name, raising=False)


# --- the parser --------------------------------------------------------------------------


def test_every_documented_command_is_there():
    assert sorted(COMMANDS) == sorted([
        "list", "show", "versions", "publish", "promote", "rollback", "alias", "canary", "canary-end", "share",
        "predict", "samples", "delete", "stats",
    ])
    assert sorted(ALIAS_COMMANDS) == ["delete", "set"]


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: " ".join(c) or "models")
def test_every_command_has_help_with_a_description(capsys, command):
    rc, out, err = run_cli(capsys, "models", *command, "--help")
    assert rc == 0, err
    assert out.startswith(f"usage: hubforge models {' '.join(command)}".rstrip())
    parser = MODELS
    for name in command:
        parser = _subcommands(parser)[name]
    assert parser.description and len(parser.description) > 20
    # argparse re-wraps the description: compare its words.
    assert " ".join(parser.description.split()[:6]) in " ".join(out.split())
    for option in ("--hub-url", "--token", "--json"):
        assert option in out


def test_the_installed_command_has_help():
    proc = subprocess.run([str(HUBFORGE), "models", "canary", "--help"], check=False, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: hubforge models canary") and "--percent" in proc.stdout


def test_models_without_a_command_is_a_usage_error(capsys):
    rc, out, err = run_cli(capsys, "models")
    assert rc == 2 and "COMMAND" in err
    rc, out, err = run_cli(capsys, "models", "alias")
    assert rc == 2 and "COMMAND" in err


def test_connection_options_go_before_or_after_the_command():
    parser = build_parser()
    before = parser.parse_args(["models", "--hub-url", HOSTILE, "--json", "list"])
    after = parser.parse_args(["models", "list", "--hub-url", HOSTILE, "--json"])
    neither = parser.parse_args(["models", "list"])
    assert (before.hub_url, before.json) == (after.hub_url, after.json) == (HOSTILE, True)
    assert (neither.hub_url, neither.token, neither.json) == (None, None, False)


def test_predict_json_is_the_body_or_the_output_flag():
    parser = build_parser()
    body = '{"dataframe_records": [{"x": 1}]}'
    assert parser.parse_args(["models", "predict", "m", "--json", body]).json == body
    assert parser.parse_args(["models", "predict", "m", "--file", "f.json", "--json"]).json is True
    assert parser.parse_args(["models", "--json", "predict", "m", "--file", "f.json"]).json is True
    assert parser.parse_args(["models", "predict", "m", "--file", "f.json"]).json is False


def test_defaults_of_the_alias_options():
    parser = build_parser()
    assert parser.parse_args(["models", "promote", "m", "3"]).alias == "production"
    assert parser.parse_args(["models", "rollback", "m", "--alias", "staging"]).alias == "staging"
    assert parser.parse_args(["models", "canary-end", "m"]).alias == "production"
    args = parser.parse_args(["models", "canary", "m", "4", "--percent", "12.5%"])
    assert (args.version, args.percent, args.alias) == (4, 12.5, "production")


@pytest.mark.parametrize("argv, message", [
    (["show", "Bad/Name"], "is not a model name"),
    (["promote", "m", "0"], "expected a number >= 1"),
    (["promote", "m", "three"], "expected a whole number"),
    (["canary", "m", "2"], "--percent"),
    (["canary", "m", "2", "--percent", "150"], "from 0 to 100"),
    (["samples", "m", "--limit", "0"], "expected a number >= 1"),
])
def test_bad_arguments_are_usage_errors(capsys, argv, message):
    rc, out, err = run_cli(capsys, "models", *argv)
    assert rc == 2
    assert message in err


# --- argument types and bodies -----------------------------------------------------------


def test_model_names_and_percentages():
    assert model_name("churn_v2-a") == "churn_v2-a"
    for bad in ("Churn", "-x", "a b", "x" * 64, ""):
        with pytest.raises(argparse.ArgumentTypeError):
            model_name(bad)
    assert percent("0") == 0 and percent("100") == 100 and percent("2.5%") == 2.5
    for bad in ("-1", "101", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            percent(bad)


def test_predict_bodies():
    records = {"dataframe_records": [{"x": 1.5}]}
    assert predict_body(json.dumps(records)) == records
    assert predict_body('[{"x": 1.5}]') == records  # a bare list: records
    assert predict_body('{"columns": {"x": [1]}}') == {"columns": {"x": [1]}}
    from hubforge.models.cli import OptionError

    with pytest.raises(OptionError, match="not valid JSON"):
        predict_body("{x: 1}")
    with pytest.raises(OptionError, match="expected a JSON object"):
        predict_body("3")


def test_sharing_body_replaces_the_lists():
    assert sharing_body(["bob", " bob ", "ann"], None, ["ci"]) == {"users": ["ann", "bob"], "groups": [],
                                                                   "services": ["ci"]}
    assert sharing_body(None, None, None) == {"users": [], "groups": [], "services": []}


# --- where the service is -----------------------------------------------------------------


@pytest.mark.parametrize("hub_url, environ, url", [
    (HOSTILE, {"JUPYTERHUB_API_URL": "http://hub:8081/hub/api"}, HOSTILE + "services/models/"),
    (None, {"JUPYTERHUB_API_URL": "https://hub.example.com/x/hub/api"}, "https://hub.example.com/x/services/models/"),
    (None, {}, "http://127.0.0.1:8000/services/models/"),
])
def test_the_service_url_comes_from_the_option_else_the_environment(hub_url, environ, url):
    client = make_client(hub_url, TOKEN, environ)
    assert client.url == url
    assert TOKEN not in repr(client)
    assert service_url("http://h:8000") == "http://h:8000/services/models/"


def test_inside_a_user_server_the_service_is_looked_up_through_the_hub():
    environ = {"JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api", "JUPYTERHUB_SERVICE_PREFIX": "/user/a/",
               "JUPYTERHUB_API_TOKEN": TOKEN}
    client = make_client(None, None, environ)
    assert client._fixed_url is None and client._api_url == environ["JUPYTERHUB_API_URL"]


def test_no_token_is_a_clear_error(capsys, no_hub_env):
    rc, out, err = run_cli(capsys, "models", "list")
    assert rc == 1
    assert err == ("hubforge models: error: no API token: give --token, or set $JUPYTERHUB_API_TOKEN or "
                   "$HUBFORGE_TOKEN (`hubforge token NAME` makes one)\n")


@pytest.mark.parametrize("command", [["list"], ["show", "m"], ["stats", "m"], ["promote", "m", "2"],
                                     ["predict", "m", "--json", "[]"]])
def test_nothing_listening_is_one_clear_line_and_exit_1(capsys, no_hub_env, command):
    url = f"http://127.0.0.1:{free_port()}/"
    rc, out, err = run_cli(capsys, "models", "--hub-url", url, "--token", TOKEN, *command)
    assert rc == 1
    assert out == ""
    assert err.startswith(f"hubforge models: error: cannot reach the models service at {url}services/models/")
    assert err.rstrip().endswith("(HTTP 502)")
    assert len(err.strip().splitlines()) == 1
    assert TOKEN not in out + err


def test_publish_refuses_a_folder_that_is_not_an_mlflow_model(capsys, no_hub_env, tmp_path):
    rc, out, err = run_cli(capsys, "models", "--token", TOKEN, "publish", "m", str(tmp_path / "missing"))
    assert rc == 1 and "is not a directory" in err
    rc, out, err = run_cli(capsys, "models", "--token", TOKEN, "publish", "m", str(tmp_path))
    assert rc == 1 and "holds no MLmodel file" in err


def test_predict_needs_one_body(capsys, no_hub_env, tmp_path):
    rc, out, err = run_cli(capsys, "models", "--token", TOKEN, "predict", "m")
    assert rc == 1 and "--json BODY or --file FILE" in err
    rc, out, err = run_cli(capsys, "models", "--token", TOKEN, "predict", "m", "--file", str(tmp_path / "no.json"))
    assert rc == 1 and "cannot read" in err


# --- formatting ---------------------------------------------------------------------------

MODEL = {
    "name": "churn", "owner": "ann", "latest_version": 4, "versions": 4,
    "aliases": {"production": 3, "staging": 4}, "canaries": {"production": {"version": 4, "percent": 10.0}},
    "default": {"alias": "production", "version": 3}, "loaded": {"3": "ready", "4": "loading"},
    "shared_with": {"users": ["bob"], "groups": [], "services": []}, "updated": "2026-11-27T06:00:00+00:00",
}


def test_aliases_canaries_and_tables_read_well():
    assert format_alias(MODEL, "production") == "production: v3 (90%) / v4 (10%)"
    assert format_alias(MODEL, "staging") == "staging: v4"
    header, row = models_table([MODEL], owners=True).splitlines()
    assert header.split()[:4] == ["NAME", "OWNER", "LATEST", "VERSIONS"]
    assert "production: v3 (90%) / v4 (10%), staging: v4" in row
    assert "v3 ready, v4 loading" in row and "users bob" in row and "production (v3)" in row
    summary = stats_summary({"interval": 5, "rate": 0.5, "p50_ms": 3.2, "p99_ms": 9.0, "series": [
        {"version": 0, "points": [{"t": 1_800_000_000, "requests": 1, "errors": 1, "rate": 0.2,
                                   "p50_ms": 1.0, "p99_ms": 1.0}]},
        {"version": 3, "points": [{"t": 1_800_000_000, "requests": 4, "errors": 0, "rate": 0.8,
                                   "p50_ms": 3.2, "p99_ms": 9.0}]}]})
    lines = summary.splitlines()
    assert lines[0] == "last minute: 0.5 requests/s, p50 3.2 ms, p99 9 ms"
    assert lines[3].split()[:3] == ["unrouted", "1", "1"] and lines[4].split()[:3] == ["v3", "4", "0"]
    assert stats_summary({"rate": 0, "series": []}).endswith("no requests in the window")


# --- against the session hub's models service -----------------------------------------------

MODEL_NAME = "cli-linear"
OWNER = "cli-modeler"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Two MLflow model directories of one tiny regression: y = 2x, then y = 3x."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from hubforge.models.client import save

    root = tmp_path_factory.mktemp("cli-models")
    example = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    dirs = []
    for slope in (2, 3):
        model = LinearRegression().fit(example, slope * example["x"])
        with warnings.catch_warnings():
            # MLflow warns about its own type hints and pickles as it imports and saves:
            # not this code's warnings to fix.
            warnings.simplefilter("ignore")
            dirs.append(save(model, str(root / f"slope-{slope}"), input_example=example))
    return dirs


@pytest.fixture(scope="module")
def owner_token(hub, admin_token):
    return hub.make_user(admin_token, OWNER)


def hubforge_models(hub, token: str, *argv, input: str | None = None) -> subprocess.CompletedProcess:
    """The installed ``hubforge models *argv`` against the session hub, token in the
    environment; standard input is `input`, else nothing (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["HUBFORGE_TOKEN"] = token
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run([str(HUBFORGE), "models", "--hub-url", hub.url, *argv], check=False, capture_output=True,
                          text=True, env=env, timeout=300, **stdin)


def ok_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_publish_promote_canary_predict_and_delete(hub, owner_token, model_dirs, tmp_path):
    token = owner_token
    v1, v2 = model_dirs
    first = ok_json(hubforge_models(hub, token, "publish", MODEL_NAME, v1, "--description", "y = 2x", "--json"))
    try:
        assert (first["model"], first["version"], first["state"]) == (MODEL_NAME, 1, "ready")
        assert first["description"] == "y = 2x" and "sklearn" in first["flavors"]
        second = ok_json(hubforge_models(hub, token, "publish", MODEL_NAME, v2, "--alias", "staging", "--json"))
        assert second["version"] == 2

        listed = ok_json(hubforge_models(hub, token, "list", "--json"))["models"]
        (model,) = [m for m in listed if m["name"] == MODEL_NAME]
        assert model["latest_version"] == 2 and model["aliases"] == {"staging": 2}
        assert model["endpoint"].endswith(f"/services/models/{MODEL_NAME}/predict")
        proc = hubforge_models(hub, token, "list")
        assert proc.returncode == 0, proc.stderr
        (line,) = [line for line in proc.stdout.splitlines() if line.startswith(MODEL_NAME + " ")]
        assert "staging: v2" in line and "latest (v2)" in line

        # production -> v1, then v2, rolled back to v1.
        assert ok_json(hubforge_models(hub, token, "promote", MODEL_NAME, "1", "--json"))["aliases"]["production"] == 1
        records = '{"dataframe_records": [{"x": 1.0}, {"x": 2.0}]}'
        assert ok_json(hubforge_models(hub, token, "predict", MODEL_NAME, "--json", records)) == {
            "predictions": [pytest.approx(2.0), pytest.approx(4.0)]}
        proc = hubforge_models(hub, token, "promote", MODEL_NAME, "2")
        assert (proc.returncode, proc.stdout) == (0, f"{MODEL_NAME} production: v2\n"), proc.stderr
        model = ok_json(hubforge_models(hub, token, "rollback", MODEL_NAME, "--json"))
        assert model["aliases"]["production"] == 1
        history = ok_json(hubforge_models(hub, token, "show", MODEL_NAME, "--json"))["alias_history"]
        assert [(e["action"], e["before"], e["after"]) for e in history[:3]] == [
            ("rollback", 2, 1), ("promote", 1, 2), ("promote", None, 1)]

        # A canary: 50% of production's traffic to v2; the text shows the split.
        model = ok_json(hubforge_models(hub, token, "canary", MODEL_NAME, "2", "--percent", "50", "--json"))
        assert model["canaries"] == {"production": {"version": 2, "percent": 50.0}}
        proc = hubforge_models(hub, token, "show", MODEL_NAME)
        assert proc.returncode == 0 and "production: v1 (50%) / v2 (50%)" in proc.stdout, proc.stderr
        body = tmp_path / "body.json"
        body.write_text('[{"x": 2.0}]')
        proc = hubforge_models(hub, token, "predict", MODEL_NAME, "--alias", "v2", "--file", str(body))
        assert proc.returncode == 0, proc.stderr
        assert float(proc.stdout) == pytest.approx(6.0)
        split = '{"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}'
        answer = ok_json(hubforge_models(hub, token, "predict", MODEL_NAME, "--alias", "staging", "--json",
                                         "--file", "-", input=split))
        assert answer == {"predictions": [pytest.approx(3.0)]}
        assert ok_json(hubforge_models(hub, token, "canary-end", MODEL_NAME, "--json"))["canaries"] == {}

        model = ok_json(hubforge_models(hub, token, "alias", "set", MODEL_NAME, "beta", "2", "--json"))
        assert model["aliases"] == {"beta": 2, "production": 1, "staging": 2}
        proc = hubforge_models(hub, token, "alias", "delete", MODEL_NAME, "beta")
        assert (proc.returncode, proc.stdout) == (0, f"deleted alias beta of {MODEL_NAME}\n"), proc.stderr

        model = ok_json(hubforge_models(hub, token, "share", MODEL_NAME, "--user", "someone", "--group", "team",
                                        "--json"))
        assert model["shared_with"] == {"users": ["someone"], "groups": ["team"], "services": []}

        versions = ok_json(hubforge_models(hub, token, "versions", MODEL_NAME, "--json"))["versions"]
        assert [v["version"] for v in versions] == [1, 2]
        stats = ok_json(hubforge_models(hub, token, "stats", MODEL_NAME, "--json"))
        assert {s["version"] for s in stats["series"]} >= {1, 2}
        proc = hubforge_models(hub, token, "stats", MODEL_NAME)
        assert proc.returncode == 0 and proc.stdout.startswith("last minute: "), proc.stderr
        samples = ok_json(hubforge_models(hub, token, "samples", MODEL_NAME, "--limit", "5", "--json"))["samples"]
        newest = samples[0]  # the prediction read from standard input
        assert (newest["alias"], newest["version"], newest["input"]) == ("staging", 2, {"x": 1.0})
        assert newest["prediction"] == pytest.approx(3.0)

        # v2 is staging's: not deleted until the alias goes.
        proc = hubforge_models(hub, token, "delete", MODEL_NAME, "--version", "2", "--yes")
        assert proc.returncode == 1 and "in use by alias staging" in proc.stderr
        assert proc.stderr.rstrip().endswith("(HTTP 409)")
        assert hubforge_models(hub, token, "alias", "delete", MODEL_NAME, "staging").returncode == 0
        proc = hubforge_models(hub, token, "delete", MODEL_NAME, "--version", "2", "--yes")
        assert (proc.returncode, proc.stdout) == (0, f"deleted version 2 of model {MODEL_NAME}\n"), proc.stderr
    finally:
        proc = hubforge_models(hub, token, "delete", MODEL_NAME, "--yes", "--json")
    assert ok_json(proc) == {"deleted": MODEL_NAME}
    proc = hubforge_models(hub, token, "show", MODEL_NAME)
    assert proc.returncode == 1
    assert proc.stderr == f"hubforge models: error: model {MODEL_NAME} does not exist (HTTP 404)\n"


@pytest.mark.slow
def test_errors_are_one_line_with_the_status(hub, owner_token, model_dirs):
    token = owner_token
    for argv in (["show", "cli-nope"], ["promote", "cli-nope", "1"], ["stats", "cli-nope"],
                 ["predict", "cli-nope", "--json", "[]"]):
        proc = hubforge_models(hub, token, *argv)
        assert proc.returncode == 1, argv
        assert proc.stdout == ""
        assert proc.stderr == "hubforge models: error: model cli-nope does not exist (HTTP 404)\n", argv
        assert token not in proc.stderr
    proc = hubforge_models(hub, "not-a-token", "list")
    assert proc.returncode == 1 and proc.stderr.startswith("hubforge models: error: ")
    assert proc.stderr.rstrip().endswith(("(HTTP 401)", "(HTTP 403)"))

    # A refused change leaves nothing behind; a delete without a terminal to ask needs --yes.
    name = "cli-errors"
    ok_json(hubforge_models(hub, token, "publish", name, model_dirs[0], "--json"))
    try:
        proc = hubforge_models(hub, token, "rollback", name)
        assert proc.returncode == 1 and "no earlier version to roll back to (HTTP 409)" in proc.stderr
        proc = hubforge_models(hub, token, "canary", name, "1", "--percent", "10")
        assert proc.returncode == 1 and "has no alias 'production'" in proc.stderr
        proc = hubforge_models(hub, token, "predict", name, "--json", '[{"y": 1}]')
        assert proc.returncode == 1 and proc.stderr.rstrip().endswith("(HTTP 400)")
        proc = hubforge_models(hub, token, "delete", name)
        assert proc.returncode == 1 and "without --yes" in proc.stderr
        assert ok_json(hubforge_models(hub, token, "show", name, "--json"))["name"] == name
    finally:
        assert hubforge_models(hub, token, "delete", name, "--yes").returncode == 0
