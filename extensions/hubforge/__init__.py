"""HubForge: a JupyterHub-based notebook platform.

``hubforge.publish(model, name=..., input_example=df)`` publishes a model from a
notebook (see :mod:`hubforge.models`).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: importing hubforge (every hub service does) must not import the models client.
    if name == "publish":
        from .models.client import publish

        return publish
    raise AttributeError(f"module 'hubforge' has no attribute {name!r}")
