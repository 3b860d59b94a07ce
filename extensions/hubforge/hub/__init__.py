"""Turns the platform settings into JupyterHub configuration (see ``config.configure``)."""
