"""Models: publish a model from a notebook and serve it as a versioned, secured REST endpoint.

The notebook-side API (``import hubforge.models as models``; ``hubforge.publish`` is
:func:`~hubforge.models.client.publish`) calls the hub's ``models`` service over REST;
docs/models.md has the whole story. The service itself is
:mod:`hubforge.models.service` (REST API, endpoints, Models page) over
:mod:`~hubforge.models.manager` (registry, aliases, canaries),
:mod:`~hubforge.models.serving` (routing, adaptive batching, stats),
:mod:`~hubforge.models.backends` (local processes, containers) and
:mod:`~hubforge.models.kubernetes`; a version runs in :mod:`~hubforge.models.worker`.

Importing this package is cheap: MLflow is imported when a model is saved.
"""

from .client import (  # noqa: F401
    ModelsError,
    PublishedModel,
    canary,
    delete,
    delete_alias,
    delete_version,
    end_canary,
    get_model,
    list_models,
    predict,
    promote,
    publish,
    rollback,
    samples,
    save,
    set_alias,
    share,
    stats,
    versions,
)


def __getattr__(name: str):
    if name == "PublishWidget":  # ipywidgets only when asked for
        from .widgets import PublishWidget

        return PublishWidget
    raise AttributeError(f"module 'hubforge.models' has no attribute {name!r}")
