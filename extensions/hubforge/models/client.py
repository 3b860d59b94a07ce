"""The notebook side of model publishing: ``hubforge.publish`` and the registry's calls.

Everything goes to the hub's ``models`` service over REST with the server's token
(:class:`hubforge.client.ServiceClient`)::

    import hubforge
    m = hubforge.publish(pipeline, name="churn", input_example=df.head(20))
    m.url, m.version, m.curl           # the endpoint, its version, a ready-to-run curl
    m.predict(df.head(3))              # through the served endpoint
    hubforge.models.promote("churn", 3)              # production -> version 3
    hubforge.models.canary("churn", 4, percent=10)   # 10% of production's traffic to 4
    hubforge.models.rollback("churn")                # production back where it was

Failures the service reports raise :class:`ModelsError` (``.status`` and ``.message``,
the service's text: 400 names the bad field, 404 an absent model, 409 a conflict, 422 a
model that cannot load or predict).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..client import ServiceClient, ServiceError

__all__ = [
    "ModelsError", "PublishedModel", "publish", "save", "list_models", "get_model", "versions", "promote",
    "set_alias", "delete_alias", "rollback", "canary", "end_canary", "delete", "delete_version", "share",
    "predict", "stats", "samples",
]

SERVICE = "models"
DEFAULT_ALIAS = "production"
#: Seconds a publish may take: the upload, then the service loads the model before it
#: answers (a scikit-learn model takes a few seconds; big ones more).
PUBLISH_TIMEOUT = 600.0

ModelsError = ServiceError


def _client(client: ServiceClient | None = None) -> ServiceClient:
    return client or ServiceClient(SERVICE, timeout=30.0)


@dataclass
class PublishedModel:
    """A published version: where to call it and how."""

    name: str
    version: int
    url: str
    info: dict = field(default_factory=dict, repr=False)
    client: ServiceClient | None = field(default=None, repr=False, compare=False)

    @property
    def curl(self) -> str:
        """A ready-to-copy ``curl`` call of the endpoint (put your token in ``$TOKEN``)."""
        from .signature import InputSchema

        schema = InputSchema((self.info.get("signature") or {}).get("inputs"))
        row = schema.example_row() if self.info.get("signature") else {}
        body = {"inputs": [row]} if schema.tensor is not None else {"dataframe_records": [row]}
        import json

        return (f"curl -X POST '{self.url}' -H \"Authorization: token $TOKEN\" "
                f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'")

    def predict(self, data) -> list:
        """Predictions of this version for `data` (a DataFrame, records or columns)."""
        return predict(self.name, data, alias=f"v{self.version}", client=self.client)

    def _repr_html_(self) -> str:
        from html import escape

        return (f"<div><b>{escape(self.name)}</b> version {self.version} is served at "
                f"<code>{escape(self.url)}</code><pre>{escape(self.curl)}</pre></div>")


def save(model, path: str, *, input_example=None, pip_requirements: Iterable[str] | None = None) -> str:
    """Save `model` as an MLflow model (pyfunc flavour) in the new folder `path`.

    scikit-learn estimators and pipelines use MLflow's ``sklearn`` flavour (cloudpickle
    format); an ``mlflow.pyfunc.PythonModel`` is saved as it is; anything else with a
    ``predict`` method is wrapped. The signature is inferred from `input_example` and
    the model's predictions on it; the requirements are MLflow's defaults for the
    flavour unless `pip_requirements` is given.
    """
    import warnings

    with warnings.catch_warnings():
        # At import, MLflow warns about a type hint of its own; not the user's concern.
        warnings.simplefilter("ignore", UserWarning)
        import mlflow.pyfunc  # noqa: F401 (imported here, under the filter)
        from mlflow.models import infer_signature

    if input_example is None:
        raise ValueError("input_example: give a few rows of the model's input (a DataFrame); "
                         "the signature that checks requests is inferred from it")
    if not hasattr(model, "predict"):
        raise TypeError(f"model: a {type(model).__name__} has no predict method")
    example = input_example.head(5) if hasattr(input_example, "head") else input_example
    requirements = list(pip_requirements) if pip_requirements is not None else None
    import logging

    sklearn_log = logging.getLogger("mlflow.sklearn")
    level = sklearn_log.level
    # MLflow's advice (integer columns; pickle formats, which HubForge chooses knowingly:
    # the worker that unpickles runs as the model's owner) and the pandas deprecations its
    # own code triggers are noise in the user's notebook, not their concern.
    sklearn_log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
        try:
            _save(model, path, infer_signature(input_example, _predict_sample(model, input_example)), example,
                  requirements)
        finally:
            sklearn_log.setLevel(level)
    return path


def _save(model, path: str, signature, example, requirements) -> None:
    import mlflow.pyfunc

    if _is_sklearn(model):
        import mlflow.sklearn

        mlflow.sklearn.save_model(
            model, path, signature=signature, input_example=example, serialization_format="cloudpickle",
            pip_requirements=requirements or mlflow.sklearn.get_default_pip_requirements())
    else:
        python_model = model if isinstance(model, mlflow.pyfunc.PythonModel) else PredictWrapper(model)
        mlflow.pyfunc.save_model(path, python_model=python_model, signature=signature, input_example=example,
                                 pip_requirements=requirements or [f"mlflow-skinny=={mlflow.__version__}"])


def _predict_sample(model, example):
    import mlflow.pyfunc

    if isinstance(model, mlflow.pyfunc.PythonModel):
        return model.predict(None, example)
    return model.predict(example)


def _is_sklearn(model) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:
        return False
    return isinstance(model, BaseEstimator)


def _python_model_base():
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


class PredictWrapper:
    """Any object with ``predict(data)`` as an MLflow ``PythonModel`` (made lazily below)."""

    def __new__(cls, model):
        base = _python_model_base()

        class _Wrapped(base):
            def __init__(self, inner):
                self.inner = inner

            def predict(self, context, model_input, params=None):
                return self.inner.predict(model_input)

        _Wrapped.__qualname__ = _Wrapped.__name__ = "PredictWrapper"
        return _Wrapped(model)


def publish(model, name: str, *, input_example=None, description: str = "", alias: str | None = None,
            pip_requirements: Iterable[str] | None = None, progress=True,
            client: ServiceClient | None = None) -> PublishedModel:
    """Publish `model` as a new version of the model `name` and serve it; returns where.

    The model is saved in MLflow's format with its signature inferred from
    `input_example`, uploaded to the hub's ``models`` service, and loaded there before
    this returns: a model that cannot load there (a missing package, say) raises
    :class:`ModelsError` 422 with the loader's error, and nothing is published. The
    endpoint answers at once: ``/services/models/<name>/predict`` serves the
    ``production`` alias if set, else the latest version. With `alias`, that alias
    (e.g. ``"staging"``) points at the new version. `progress`: True (a progress bar),
    False, or a callable ``(step, total, text)``.
    """
    from .archive import pack
    from .manager import check_model_name

    check_model_name(name)
    bar = _Progress(progress, total=3)
    with tempfile.TemporaryDirectory(prefix="hubforge-publish-") as tmp:
        bar.step("saving the model (MLflow format)")
        save(model, os.path.join(tmp, "model"), input_example=input_example, pip_requirements=pip_requirements)
        blob = pack(os.path.join(tmp, "model"))
    bar.step(f"uploading {len(blob) / 2**20:.1f} MiB; the service loads it")
    c = _client(client)
    params = {"description": description}
    if alias:
        params["alias"] = alias
    version = c.request("POST", f"api/models/{name}/versions", params=params, data=blob,
                        content_type="application/gzip", timeout=PUBLISH_TIMEOUT)
    bar.step(f"version {version['version']} is served")
    bar.close()
    url = version.get("endpoint") or ""
    info = c.get(f"api/models/{name}")
    return PublishedModel(name, version["version"], info.get("endpoint", url), info=version, client=c)


class _Progress:
    """A small tqdm bar (the notebook's widget bar in Jupyter), a callback
    ``progress(step, total, text)`` (the Publish widget's), or nothing."""

    def __init__(self, enabled, total: int):
        self.bar = None
        self.callback = enabled if callable(enabled) else None
        self.total = total
        self.n = 0
        if enabled is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="publish", bar_format="{desc}: {n}/{total} {postfix}")

    def step(self, text: str) -> None:
        self.n += 1
        if self.callback is not None:
            self.callback(self.n, self.total, text)
        if self.bar is not None:
            self.bar.set_postfix_str(text)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- the registry -------------------------------------------------------------------------
def list_models(*, all_users: bool = False, client: ServiceClient | None = None) -> list[dict]:
    """Your models and those shared with you (admins, `all_users`: everyone's)."""
    return _client(client).get("api/models", {"all": "1"} if all_users else None)["models"]


def get_model(name: str, *, client: ServiceClient | None = None) -> dict:
    """A model with its versions and alias history."""
    return _client(client).get(f"api/models/{name}")


def versions(name: str, *, client: ServiceClient | None = None) -> list[dict]:
    return _client(client).get(f"api/models/{name}/versions")["versions"]


def set_alias(name: str, alias: str, version: int, *, client: ServiceClient | None = None) -> dict:
    """Point `alias` at `version` (loaded first: no request fails during the switch)."""
    return _client(client).request("PUT", f"api/models/{name}/aliases/{alias}", {"version": version},
                                   timeout=PUBLISH_TIMEOUT)


def promote(name: str, version: int, *, alias: str = DEFAULT_ALIAS, client: ServiceClient | None = None) -> dict:
    """Make `version` the one `alias` (default ``production``) serves."""
    return set_alias(name, alias, version, client=client)


def delete_alias(name: str, alias: str, *, client: ServiceClient | None = None) -> None:
    _client(client).delete(f"api/models/{name}/aliases/{alias}")


def rollback(name: str, *, alias: str = DEFAULT_ALIAS, client: ServiceClient | None = None) -> dict:
    """Point `alias` back at the version it served before its last change."""
    return _client(client).request("POST", f"api/models/{name}/aliases/{alias}/rollback", {},
                                   timeout=PUBLISH_TIMEOUT)


def canary(name: str, version: int, *, percent: float, alias: str = DEFAULT_ALIAS,
           client: ServiceClient | None = None) -> dict:
    """Send `percent` % of `alias`'s requests to `version` (promote it to finish)."""
    return _client(client).request("PUT", f"api/models/{name}/aliases/{alias}/canary",
                                   {"version": version, "percent": percent}, timeout=PUBLISH_TIMEOUT)


def end_canary(name: str, *, alias: str = DEFAULT_ALIAS, client: ServiceClient | None = None) -> dict:
    return _client(client).request("DELETE", f"api/models/{name}/aliases/{alias}/canary")


def delete(name: str, *, client: ServiceClient | None = None) -> None:
    """Delete a model, every version and its endpoint."""
    _client(client).delete(f"api/models/{name}")


def delete_version(name: str, version: int, *, client: ServiceClient | None = None) -> None:
    _client(client).delete(f"api/models/{name}/versions/{version}")


def share(name: str, *, users: Iterable[str] = (), groups: Iterable[str] = (), services: Iterable[str] = (),
          client: ServiceClient | None = None) -> dict:
    """Let these users, groups' members and hub services call the model (replaces the list)."""
    return _client(client).request("PUT", f"api/models/{name}/sharing",
                                   {"users": list(users), "groups": list(groups), "services": list(services)})


def predict(name: str, data, *, alias: str | None = None, client: ServiceClient | None = None) -> list:
    """Predictions of the served model for `data`: a DataFrame, a list of records, or a
    dict of columns. `alias`: an alias, or ``v3`` for a version (default: the default route)."""
    body: Any
    if hasattr(data, "to_dict"):
        import json

        body = {"dataframe_split": json.loads(data.to_json(orient="split", index=False, date_format="iso"))}
    elif isinstance(data, dict):
        body = {"columns": data}
    else:
        body = {"dataframe_records": list(data)}
    target = f"{name}@{alias}" if alias else name
    return _client(client).post(f"{target}/predict", body)["predictions"]


def stats(name: str, *, client: ServiceClient | None = None) -> dict:
    """Request rate and latency over the last minutes, per version (the page's charts)."""
    return _client(client).get(f"api/models/{name}/stats")


def samples(name: str, *, limit: int = 100, client: ServiceClient | None = None) -> list[dict]:
    """The newest sampled inputs and predictions (owner and admins)."""
    return _client(client).get(f"api/models/{name}/samples", {"limit": str(limit)})["samples"]
