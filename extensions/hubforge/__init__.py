"""HubForge: a JupyterHub-based notebook platform."""

__version__ = "0.1.0"
