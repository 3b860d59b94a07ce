"""The notebook side of model publishing: `hubforge.publish`, `hubforge.models.save` and
the Publish widget.

The fast tests need no service: what `save` writes for each kind of model (a
scikit-learn pipeline, an MLflow PythonModel, any object with ``predict``), checked by
loading it back with MLflow, and the widget's refusals before any request. The slow ones
publish to the session hub's real ``models`` service as a hub user with their own token,
as a notebook would, and call the endpoint they get back.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import hubforge
from hubforge.models import client as models
from hubforge.models.widgets import PublishWidget


def frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return pd.DataFrame({"age": rng.integers(18, 80, n), "income": rng.normal(5e4, 1e4, n),
                         "plan": rng.choice(["basic", "pro"], n)})


def pipeline(df: pd.DataFrame):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer([("num", StandardScaler(), ["age", "income"]),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])])
    return Pipeline([("prep", prep), ("clf", LogisticRegression())]).fit(df, (df.age > 45).astype(int))


class Doubler:
    """Not a scikit-learn model, not an MLflow one: anything with predict."""

    def predict(self, data):
        return (data["income"] * 2).to_numpy()


@pytest.mark.parametrize("kind", ["sklearn", "plain"])
def test_save_writes_a_pyfunc_model_with_the_signature_of_the_example(kind, tmp_path):
    import mlflow.pyfunc

    df = frame()
    model = pipeline(df) if kind == "sklearn" else Doubler()
    models.save(model, str(tmp_path / "m"), input_example=df)
    meta = yaml.safe_load((tmp_path / "m" / "MLmodel").read_text())
    assert "python_function" in meta["flavors"]
    inputs = json.loads(meta["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [("age", "long"), ("income", "double"), ("plan", "string")]
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    assert np.allclose(loaded.predict(df.head(7)), model.predict(df.head(7)))


def test_save_refuses_what_cannot_be_served(tmp_path):
    with pytest.raises(ValueError, match="input_example"):
        models.save(Doubler(), str(tmp_path / "a"))
    with pytest.raises(TypeError, match="no predict method"):
        models.save(object(), str(tmp_path / "b"), input_example=frame())


def test_the_widget_refuses_a_bad_name_before_any_request(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    w = PublishWidget(Doubler(), input_example=frame(), name="Not A Name")
    w.publish_button.click()
    assert "is not allowed" in w.error and w.result is None
    assert "color" in w.status.value and "Not A Name" in w.status.value


# --- against the session hub -------------------------------------------------------------
@pytest.fixture(scope="module")
def notebook_user(hub, admin_token):
    return {"token": hub.make_user(admin_token, "nbmodels"), "api_url": hub.api,
            "other": hub.make_user(admin_token, "nbmodels2")}


@pytest.fixture
def as_user(notebook_user, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_URL", notebook_user["api_url"])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", notebook_user["token"])
    return notebook_user


@pytest.mark.slow
def test_publish_serves_the_model_and_the_widget_shows_where(as_user, monkeypatch):
    df = frame()
    model = pipeline(df)
    published = hubforge.publish(model, name="nb-churn", input_example=df, description="first", progress=False)
    assert published.version == 1 and published.url.endswith("/services/models/nb-churn/predict")
    assert published.predict(df.head(5)) == model.predict(df.head(5)).tolist()
    assert "$TOKEN" in published.curl and as_user["token"] not in published.curl

    steps = []
    w = PublishWidget(model, input_example=df, name="nb-churn")
    w.alias_choice.value = "staging"
    w.progress.observe(lambda change: steps.append(change["new"]), "value")
    w.publish_button.click()
    assert w.error == "" and w.result.version == 2, w.error
    assert steps == [1, 2, 3]
    assert "nb-churn" in w.status.value and "$TOKEN" in w.status.value and as_user["token"] not in w.status.value
    info = models.get_model("nb-churn")
    assert info["aliases"] == {"staging": 2} and [v["version"] for v in info["version_list"]] == [1, 2]
    assert models.predict("nb-churn", df.head(3), alias="staging") == model.predict(df.head(3)).tolist()

    # Another user may not publish under that name: the widget says so, in red.
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", as_user["other"])
    w = PublishWidget(model, input_example=df, name="nb-churn")
    w.publish_button.click()
    assert w.result is None and "taken by another user" in w.error and "color" in w.status.value
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", as_user["token"])
    models.delete("nb-churn")
    assert all(m["name"] != "nb-churn" for m in models.list_models())
