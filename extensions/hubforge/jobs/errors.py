"""The jobs service's exceptions (see the tree in :mod:`hubforge.exceptions`).

* :class:`InvalidJob` — bad input in a job definition or a request (HTTP 400). It names
  the field (``trigger.cron``, ``parameters.alpha``) and the reason separately, so the
  REST API, the CLI and the widget can all show "field: reason".
* :class:`JobConflict` — a request that contradicts the state (HTTP 409): a name already
  taken, cancelling a run that has finished.
"""

from __future__ import annotations

from ..exceptions import UserInputError


class InvalidJob(UserInputError):
    """A job definition or request field is invalid: ``field`` and ``reason``."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class JobConflict(UserInputError):
    """The request conflicts with the current state of a job or run (HTTP 409)."""

    status_code = 409
