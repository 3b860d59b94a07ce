"""The exceptions HubForge raises, in one small tree.

Catch the class that matches what you can handle; everything HubForge raises
on purpose derives from :class:`HubForgeError`::

    HubForgeError                 anything HubForge raises on purpose
    ├── ConfigError               an administrator's file or setting is wrong;
    │   │                         fix the file, then restart or reload
    │   ├── ProfileFileError      spawner-profile files failed to load (.issues)
    │   ├── SettingsError         the platform settings file is wrong
    │   └── CatalogueError        the data-connection catalogue is wrong
    │                             (hubforge.data.catalogue)
    ├── MissingSecrets            a connection's secret is not set (catalogue)
    ├── GPUUnavailable            a server needs more GPUs than are free
    ├── ImageBuildError           building a standard image failed (hubforge.images)
    ├── ServiceError              a HubForge service answered an error, or did not
    │   │                         answer (hubforge.client: .status, .message)
    │   └── JobsError             ... the jobs service (hubforge.jobs.client)
    ├── DataError                 a data connection could not be used; the message
    │   │                         names the connection, never a credential
    │   └── QueryTimeout          a query ran past the connection's timeout (504)
    └── UserInputError            a user sent something invalid: HTTP 400, and
        │                         ``.message`` is safe to show to that user
        ├── OptionsError          a bad ``user_options`` field (.field, .message)
        ├── InvalidJob            a bad job definition field (.field, .reason)
        │                         (hubforge.jobs.errors)
        └── JobConflict           a job request conflicts with the state: 409

Classes that belong to one capability live in its package (named above) and derive
from these bases, so importing this module stays free of their dependencies.

Rules for adding a class: put it under the branch that says who must act
(the administrator or the user), keep the user-facing text in ``.message``
separate from anything that belongs only in logs, and give user errors the
HTTP status the handlers should answer with in ``status_code``.
"""

from __future__ import annotations

from collections.abc import Iterable


class HubForgeError(Exception):
    """Base class of every error HubForge raises on purpose."""


class ConfigError(HubForgeError):
    """Administrator-supplied configuration is invalid.

    These errors name files and line numbers and are meant for logs and the
    ``hubforge`` command line, not for end users.
    """


class ProfileFileError(ConfigError):
    """One or more spawner-profile files are invalid.

    ``issues`` holds every problem found (not just the first), each with its
    file, line, profile and field; ``str()`` lists them one per line.
    """

    def __init__(self, issues: Iterable[object]):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class UserInputError(HubForgeError):
    """Input from a user (form, REST body, job parameters) is invalid.

    ``message`` is written for the user and may be sent back verbatim;
    ``status_code`` is the HTTP status a handler should answer with.
    """

    status_code = 400

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class OptionsError(UserInputError):
    """A field of a server's ``user_options`` is invalid.

    ``field`` is the ``user_options`` key at fault (``"profile"``, an option
    name, or ``"<option>--unlisted-choice"``) so a form can point at it.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)

    def __str__(self) -> str:
        return f"user_options[{self.field!r}]: {self.message}"


class SettingsError(ConfigError):
    """The platform settings file is missing, unreadable, or has a bad key or value."""


class GPUUnavailable(HubForgeError):
    """A server needs more GPUs than are free (or than the machine has)."""
