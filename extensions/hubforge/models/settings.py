"""The ``models:`` section of ``hubforge.yaml``: the model-serving service's settings.

Every key is optional; ``docs/configuration.md`` lists them (generated from the help
texts below). Example::

    models:
      max_batch_size: 64
      sample_rate: 0.05
      invoke_scopes: [churn]
"""

from __future__ import annotations

import re

from traitlets import Bool, Float, Integer, List, Unicode, validate

from ..exceptions import SettingsError
from ..settings import SettingsSection

#: A model's name: it is part of every URL of the model, so it is kept URL- and
#: DNS-friendly (Kubernetes object names are built from it).
#: The scopes of the models service (hubconfig.py declares them to the hub).
READ_SCOPE = "custom:hubforge:models:read"
WRITE_SCOPE = "custom:hubforge:models:write"
INVOKE_SCOPE = "custom:hubforge:models:invoke"

MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ModelsSettings(SettingsSection):
    """The ``models:`` section of ``hubforge.yaml`` (every key optional)."""

    section = "models"

    enabled = Bool(
        True,
        help="Run the ``models`` hub service (publishing and serving models). Default true.",
    ).tag(config=True)

    db_url = Unicode(
        "",
        help="""SQLAlchemy URL of the model registry's database, e.g.
        ``postgresql://models:...@db/models``. Default: ``models.sqlite`` in the hub's data
        directory. The environment variable ``HUBFORGE_MODELS_DB_URL`` overrides it.""",
    ).tag(config=True)

    max_batch_size = Integer(
        64,
        help="""The most rows one ``predict`` call of a model receives. Requests that arrive
        while the model is busy wait and are then predicted together, up to this many
        rows (adaptive batching: a request that finds the model idle is predicted at
        once, alone). Default 64. 1 turns batching off.""",
    ).tag(config=True)

    batch_linger_ms = Float(
        4,
        help="""Under load, the longest a batch waits for more requests, in milliseconds
        (at most half of the model's last predict time, and only for models whose predict
        takes over 2 ms: then fewer, larger calls leave more CPU to bring requests in). A
        lone caller never waits. Default 4. 0 turns waiting off.""",
    ).tag(config=True)

    max_request_rows = Integer(
        10_000,
        help="The most rows one request may send; more answers 413. Default 10000.",
    ).tag(config=True)

    max_request_mb = Float(
        20,
        help="The largest request body a model accepts, in MiB. Default 20.",
    ).tag(config=True)

    max_upload_mb = Float(
        500,
        help="The largest model archive a user may upload, in MiB (compressed). Default 500.",
    ).tag(config=True)

    max_models_per_user = Integer(
        50,
        help="The most models one user may own; publishing another answers 409. Default 50.",
    ).tag(config=True)

    max_loaded_versions = Integer(
        4,
        help="""The most versions of one model served at once (those its aliases and canaries
        point at, the latest, and versions called by number). A version called by number
        beyond that answers 409. Default 4.""",
    ).tag(config=True)

    idle_unload_seconds = Float(
        900,
        help="""Seconds a served version that no alias points at (one called by number, or
        the latest once an alias exists) stays loaded without requests. Default 900.""",
    ).tag(config=True)

    load_timeout = Float(
        300,
        help="Seconds a model version may take to load before it is marked failed. Default 300.",
    ).tag(config=True)

    predict_timeout = Float(
        60,
        help="""Seconds one ``predict`` call may take; a request waiting longer answers 504
        and the model's process is restarted. Default 60.""",
    ).tag(config=True)

    sample_rate = Float(
        0.01,
        help="""Fraction of requests whose inputs and predictions are kept in the model's
        sample log (for monitoring drift), 0 to 1. Default 0.01. The first 20 requests of
        each version are always kept.""",
    ).tag(config=True)

    sample_keep = Integer(
        1000,
        help="The most samples kept per model (oldest dropped first). Default 1000.",
    ).tag(config=True)

    stats_window_seconds = Integer(
        900,
        help="""Seconds of request-rate and latency history kept in memory for the Models page
        charts, in 5-second buckets. Default 900. Prometheus's ``/metrics`` keeps no window.""",
    ).tag(config=True)

    invoke_scopes = List(
        Unicode(),
        help="""Models that get a scope of their own, ``custom:hubforge:models:invoke:<name>``,
        which admins can grant through roles (``load_roles``) to users, groups and services
        that may call the model. Owners can also share a model themselves
        (``hubforge models share``). Default: none. Example: ``invoke_scopes: [churn]``.""",
    ).tag(config=True)

    container_image = Unicode(
        "",
        help="""In mode ``containers`` and ``kubernetes``: the image a model version runs in.
        Default: the image of the first CPU profile (a model runs in the environment of
        the notebook servers it was made in).""",
    ).tag(config=True)

    kubernetes_max_replicas = Integer(
        4,
        help="""In mode ``kubernetes``: the most pods a served version scales to (a
        HorizontalPodAutoscaler at 70% CPU). Default 4.""",
    ).tag(config=True)

    @validate("sample_rate")
    def _check_rate(self, proposal):
        value = proposal["value"]
        if not 0 <= value <= 1:
            raise SettingsError(f"{self.where('sample_rate')}: must be from 0 to 1, got {value!r}")
        return value

    @validate("max_batch_size", "max_request_rows", "max_loaded_versions")
    def _check_positive(self, proposal):
        if proposal["value"] < 1:
            raise SettingsError(f"{self.where(proposal['trait'].name)}: must be 1 or more, got {proposal['value']!r}")
        return proposal["value"]

    @validate("invoke_scopes")
    def _check_names(self, proposal):
        for name in proposal["value"]:
            if not MODEL_NAME.match(name):
                raise SettingsError(f"{self.where('invoke_scopes')}: {name!r} is not a model name "
                                    "(lower-case letters, digits, '-' and '_', at most 63)")
        return proposal["value"]
