"""The models service's errors: each carries the HTTP status a caller gets and a message
that names the field, version or alias at fault (see ``hubforge.exceptions``)."""

from __future__ import annotations

from ..exceptions import UserInputError


class ModelError(UserInputError):
    """Something about a model request is wrong; `status_code` says what kind."""

    status_code = 400

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class InvalidInput(ModelError):
    """A predict request's body does not match the model's signature (400)."""


class InvalidArchive(ModelError):
    """An uploaded model is not a usable MLflow model directory (400)."""


class ModelConflict(ModelError):
    """The request conflicts with the registry's state (409)."""

    status_code = 409


class PredictFailed(ModelError):
    """The model raised on valid input (422), or its process failed (502/504)."""

    status_code = 422
