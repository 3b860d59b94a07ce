"""The data-connection catalogue: named connections, who may use them, their secrets.

Administrators declare the team's data sources once, in a YAML file named by the
``data_connections`` platform setting (format: docs/data.md)::

    connections:
      warehouse:
        kind: sql
        description: Team warehouse (PostgreSQL)
        url: postgresql+psycopg://analyst@db.internal:5432/warehouse
        password: {env: WAREHOUSE_PASSWORD}
        allowed_groups: [analysts]

Only the ``data`` hub service reads this file and the secrets; a user's server asks the
service for one connection's credentials, and only for a connection it may use.

* :func:`load_catalogue` validates a file and returns a :class:`Catalogue`, or raises
  :class:`CatalogueError` listing every problem as ``FILE:LINE: connection 'NAME':
  field 'FIELD': MESSAGE`` (:func:`check_catalogue` returns the list instead).
* :class:`Secrets` resolves ``{env: NAME}`` and ``{secret: NAME}`` references from the
  environment and the secrets file into :class:`Credentials`. A missing value is not an
  error of the file: that one connection reports :class:`MissingSecrets` when used.
* Nothing here prints a secret: references print as their name, and
  :class:`Credentials` hides its URL and options in ``repr``.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import ConfigError, HubForgeError
from ..profiles.loader import parse_text

KINDS = ("sql", "files")
DEFAULT_QUERY_TIMEOUT = 30.0
#: Connection names appear in URLs (``api/connections/<name>``) and in Python code.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: ``{sample_data}`` in a URL: HubForge's small sample data set, created by the data
#: service on first start in a directory every local user can read.
SAMPLE_DATA_PLACEHOLDER = "{sample_data}"
DEFAULT_SAMPLE_DATA_DIR = Path(sys.prefix) / "share" / "hubforge" / "sample-data"

_COMMON_FIELDS = {"kind", "description", "url", "allowed_users", "allowed_groups", "query_timeout"}
FIELDS = {"sql": _COMMON_FIELDS | {"password"}, "files": _COMMON_FIELDS | {"storage_options"}}
TOP_LEVEL_FIELDS = {"connections"}


class CatalogueError(ConfigError):
    """The data-connection catalogue is invalid; ``issues`` lists every problem."""

    def __init__(self, issues: Iterable["CatalogueIssue"]):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class MissingSecrets(HubForgeError):
    """A connection refers to secrets that are not set; ``refs`` names them (no values)."""

    def __init__(self, connection: str, refs: Iterable["SecretRef"]):
        self.connection = connection
        self.refs = list(refs)
        super().__init__(f"connection {connection!r}: missing {', '.join(map(str, self.refs))}")


@dataclass(frozen=True)
class CatalogueIssue:
    """One problem in a catalogue file; ``line`` is 1-based, None when unknown."""

    file: str
    line: int | None
    connection: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        parts = [self.file if self.line is None else f"{self.file}:{self.line}"]
        if self.connection is not None:
            parts.append(f"connection {self.connection!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        parts.append(self.message)
        return ": ".join(parts)


@dataclass(frozen=True)
class SecretRef:
    """A reference to a secret: ``{env: NAME}`` or ``{secret: NAME}``. Prints its name only."""

    source: str  # "env" or "secret"
    name: str

    def __str__(self) -> str:
        if self.source == "env":
            return f"environment variable {self.name}"
        return f"secret {self.name!r}"


@dataclass(frozen=True)
class Connection:
    """One catalogue entry, validated. Holds secret *references*, never values."""

    name: str
    kind: str
    url: str
    description: str = ""
    password: SecretRef | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    allowed_users: frozenset[str] = frozenset()
    allowed_groups: frozenset[str] = frozenset()
    query_timeout: float = DEFAULT_QUERY_TIMEOUT
    file: str = ""
    line: int | None = None

    @property
    def open_to_all(self) -> bool:
        """True when neither users nor groups are listed: every hub user may use it."""
        return not self.allowed_users and not self.allowed_groups

    def allows(self, user: str, groups: Iterable[str]) -> bool:
        """Whether hub user `user`, member of `groups`, may use this connection."""
        if self.open_to_all or user in self.allowed_users:
            return True
        return not self.allowed_groups.isdisjoint(groups)

    def secret_refs(self) -> list[SecretRef]:
        """Every secret this connection needs, in file order."""
        refs = [self.password] if self.password else []
        return refs + list(_refs_in(self.storage_options))

    def summary(self) -> dict[str, str]:
        """What anyone who may use the connection may know about it."""
        return {"name": self.name, "kind": self.kind, "description": self.description}


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a driver needs to open a connection: secrets filled in. Never logged.

    ``url`` is a SQLAlchemy URL with the password (kind ``sql``) or an fsspec URL (kind
    ``files``); ``storage_options`` are fsspec options with secrets resolved.
    """

    name: str
    kind: str
    url: str
    storage_options: Mapping[str, Any]
    query_timeout: float

    def __repr__(self) -> str:
        return f"Credentials(name={self.name!r}, kind={self.kind!r}, url=<hidden>, storage_options=<hidden>)"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "storage_options": dict(self.storage_options),
            "query_timeout": self.query_timeout,
        }


class Catalogue:
    """The validated connections of one catalogue file, by name (file order kept)."""

    def __init__(
        self,
        connections: Iterable[Connection],
        file: str = "",
        sample_data_dir: Path = DEFAULT_SAMPLE_DATA_DIR,
        uses_sample_data: bool = False,
    ):
        self.file = file
        self.sample_data_dir = Path(sample_data_dir)
        #: Whether a URL used ``{sample_data}``: the service then creates the sample set.
        self.uses_sample_data = uses_sample_data
        self.connections: dict[str, Connection] = {c.name: c for c in connections}

    def __iter__(self) -> Iterator[Connection]:
        return iter(self.connections.values())

    def __len__(self) -> int:
        return len(self.connections)

    def get(self, name: str) -> Connection | None:
        return self.connections.get(name)

    def usable_by(self, user: str, groups: Iterable[str]) -> list[Connection]:
        """The connections `user` (in `groups`) may use."""
        groups = set(groups)
        return [c for c in self if c.allows(user, groups)]

    def env_names(self) -> set[str]:
        """Names of the environment variables the connections refer to."""
        return {ref.name for c in self for ref in c.secret_refs() if ref.source == "env"}


class Secrets:
    """Where secret references are looked up: the environment and the secrets file.

    An empty value counts as missing. ``problems`` holds what went wrong reading the
    secrets file (it never contains a value).
    """

    def __init__(self, environ: Mapping[str, str] | None = None, values: Mapping[str, str] | None = None):
        self.environ = dict(os.environ if environ is None else environ)
        self.values = dict(values or {})
        self.problems: list[str] = []

    @classmethod
    def load(cls, path: str | os.PathLike | None, environ: Mapping[str, str] | None = None) -> "Secrets":
        """Secrets from `environ` (default: this process's) and the YAML file `path`.

        The file is a mapping ``name: value``. A missing or malformed file, or one that
        others can read, is recorded in ``problems``; its secrets are then missing (or,
        for loose permissions, still used).
        """
        secrets = cls(environ)
        if not path:
            return secrets
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            mode = path.stat().st_mode
        except OSError as e:
            secrets.problems.append(f"{path}: cannot read the secrets file: {e.strerror}")
            return secrets
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            secrets.problems.append(
                f"{path}: the secrets file is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
            )
        parsed = parse_text(text, str(path))
        if parsed.issues:
            # The parser's messages name lines, never values.
            secrets.problems += [f"{path}:{i.line}: {i.message}" if i.line else f"{path}: {i.message}"
                                 for i in parsed.issues]
            return secrets
        if parsed.data is None:
            return secrets
        if not isinstance(parsed.data, Mapping):
            secrets.problems.append(f"{path}: expected a mapping of secret names to values")
            return secrets
        for name, value in parsed.data.items():
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                secrets.values[str(name)] = str(value)
            else:
                line = parsed.lines.get((name,))
                secrets.problems.append(f"{path}:{line}: secret {name!r}: the value must be text")
        return secrets

    def lookup(self, ref: SecretRef) -> str | None:
        value = self.environ.get(ref.name) if ref.source == "env" else self.values.get(ref.name)
        return value or None

    def missing(self, connection: Connection) -> list[SecretRef]:
        """The references of `connection` that have no value."""
        return [ref for ref in connection.secret_refs() if self.lookup(ref) is None]

    def credentials(self, connection: Connection) -> Credentials:
        """`connection` with its secrets filled in; raises MissingSecrets."""
        missing = self.missing(connection)
        if missing:
            raise MissingSecrets(connection.name, missing)
        url = connection.url
        if connection.password is not None:
            from sqlalchemy.engine import make_url

            url = make_url(url).set(password=self.lookup(connection.password)).render_as_string(
                hide_password=False
            )
        return Credentials(
            name=connection.name,
            kind=connection.kind,
            url=url,
            storage_options=self._resolve(connection.storage_options),
            query_timeout=connection.query_timeout,
        )

    def values_for(self, catalogue: Catalogue) -> set[str]:
        """Every secret value the catalogue uses, also URL-encoded as in a URL (for redaction)."""
        from urllib.parse import quote, quote_plus

        found = set()
        for connection in catalogue:
            for ref in connection.secret_refs():
                value = self.lookup(ref)
                if value:
                    found |= {value, quote(value, safe=""), quote_plus(value)}
        return found

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, SecretRef):
            return self.lookup(value)
        if isinstance(value, Mapping):
            return {k: self._resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        return value


def _refs_in(value: Any) -> Iterator[SecretRef]:
    if isinstance(value, SecretRef):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _refs_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs_in(v)


# --- reading and validating -----------------------------------------------------------


class _Reader:
    """Turns one parsed file into connections, collecting every problem with its line."""

    def __init__(self, file: str, lines: dict, sample_data_dir: Path):
        self.file = file
        self.lines = lines
        self.sample_data_dir = sample_data_dir
        self.uses_sample_data = False
        self.issues: list[CatalogueIssue] = []

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def problem(self, path: tuple, message: str) -> None:
        connection = path[1] if len(path) >= 2 and path[0] == "connections" else None
        field_path = path[2:] if connection is not None else path
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in field_path).lstrip(".")
        self.issues.append(CatalogueIssue(self.file, self.line(path), connection, dotted or None, message))

    def read(self, data: Any) -> list[Connection]:
        if not isinstance(data, Mapping):
            self.problem((), f"expected a mapping with a 'connections' key, got {_type(data)}")
            return []
        for key in data:
            if key not in TOP_LEVEL_FIELDS:
                self.problem((key,), f"unknown key {key!r}; expected: connections")
        entries = data.get("connections")
        if entries is None:
            self.problem((), "missing 'connections' (a mapping of connection names to settings)")
            return []
        if not isinstance(entries, Mapping):
            self.problem(("connections",), f"'connections' must be a mapping of names to settings, got {_type(entries)}")
            return []
        connections = []
        for name, spec in entries.items():
            connection = self.connection(str(name), spec)
            if connection is not None:
                connections.append(connection)
        return connections

    def connection(self, name: str, spec: Any) -> Connection | None:
        base = ("connections", name)
        before = len(self.issues)
        if not NAME_PATTERN.match(name):
            self.problem(base, "invalid name: use letters, digits, '_', '-' and '.', starting with a letter or digit")
        if not isinstance(spec, Mapping):
            self.problem(base, f"expected a mapping of settings, got {_type(spec)}")
            return None
        kind = spec.get("kind")
        if kind not in KINDS:
            message = "missing" if kind is None else f"unknown kind {kind!r}"
            self.problem(base + ("kind",), f"{message}; choose one of: {', '.join(KINDS)}")
            return None
        for key in spec:
            if key not in FIELDS[kind]:
                hint = (
                    " (storage_options is for kind 'files'; a SQL connection's options go in its URL)"
                    if key == "storage_options" else
                    " (kind 'files' takes secrets in storage_options)" if key == "password" else ""
                )
                self.problem(base + (key,), f"unknown field for kind {kind!r}{hint}; "
                                            f"known: {', '.join(sorted(FIELDS[kind]))}")
        description = spec.get("description", "")
        if not isinstance(description, str):
            self.problem(base + ("description",), "must be text")
        url = self.url(base, kind, spec.get("url"))
        password = None
        if "password" in spec:
            password = self.secret_ref(base + ("password",), spec["password"], required=True)
        storage_options = {}
        if "storage_options" in spec:
            if isinstance(spec["storage_options"], Mapping):
                storage_options = self.options(base + ("storage_options",), spec["storage_options"])
            else:
                self.problem(base + ("storage_options",), "must be a mapping of fsspec options")
        users = self.names(base + ("allowed_users",), spec.get("allowed_users", []))
        groups = self.names(base + ("allowed_groups",), spec.get("allowed_groups", []))
        timeout = spec.get("query_timeout", DEFAULT_QUERY_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            self.problem(base + ("query_timeout",), f"must be a positive number of seconds, got {timeout!r}")
        if len(self.issues) > before:
            return None
        return Connection(
            name=name, kind=kind, url=url, description=description, password=password,
            storage_options=storage_options, allowed_users=frozenset(users),
            allowed_groups=frozenset(groups), query_timeout=float(timeout),
            file=self.file, line=self.line(base),
        )

    def url(self, base: tuple, kind: str, url: Any) -> str:
        path = base + ("url",)
        if not isinstance(url, str) or not url.strip():
            self.problem(path, "missing; give " + ("a SQLAlchemy URL" if kind == "sql" else "an fsspec URL"))
            return ""
        url = url.strip()
        if SAMPLE_DATA_PLACEHOLDER in url:
            self.uses_sample_data = True
            url = url.replace(SAMPLE_DATA_PLACEHOLDER, str(self.sample_data_dir))
        if kind == "sql":
            self.sql_url(path, url)
        else:
            self.files_url(path, url)
        return url

    def sql_url(self, path: tuple, url: str) -> None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            parsed = make_url(url)
        except ArgumentError:
            # SQLAlchemy's message would repeat the URL; it holds no secret but say it plainly.
            self.problem(path, "not a SQLAlchemy URL (expected dialect+driver://user@host:port/database)")
            return
        if parsed.password is not None:
            self.problem(path, "the URL contains a password; move it to 'password: {env: NAME}' "
                               "or '{secret: NAME}' and remove it from the URL")
        try:
            parsed.get_dialect()
        except NoSuchModuleError:
            self.problem(path, f"unknown SQLAlchemy dialect or driver {parsed.drivername!r} "
                               "(is its package installed?)")

    def files_url(self, path: tuple, url: str) -> None:
        import fsspec
        from fsspec.core import split_protocol

        protocol, rest = split_protocol(url)
        if protocol is None:
            if not os.path.isabs(url):
                self.problem(path, "a local path must be absolute (or use file:///...)")
            return
        if protocol not in fsspec.available_protocols():
            self.problem(path, f"unknown fsspec protocol {protocol!r}")
        elif protocol in ("file", "local") and not os.path.isabs(rest):
            self.problem(path, "a file:// URL needs an absolute path, e.g. file:///srv/data/")
        if "@" in rest.split("/", 1)[0] and ":" in rest.split("@", 1)[0]:
            self.problem(path, "the URL contains credentials; move them to storage_options "
                               "with {env: NAME} or {secret: NAME}")

    def secret_ref(self, path: tuple, value: Any, required: bool = False) -> SecretRef | None:
        if isinstance(value, Mapping) and len(value) == 1:
            (source, name), = value.items()
            if source in ("env", "secret"):
                if isinstance(name, str) and name.strip():
                    return SecretRef(source, name.strip())
                self.problem(path + (source,), "must name an environment variable or a secret")
                return None
        if required:
            if isinstance(value, str):
                self.problem(path, "write {env: NAME} or {secret: NAME}, not the password itself: "
                                   "passwords stay out of the catalogue")
            else:
                self.problem(path, "expected {env: NAME} or {secret: NAME}")
        return None

    def options(self, path: tuple, value: Any) -> Any:
        if isinstance(value, Mapping):
            if len(value) == 1 and next(iter(value)) in ("env", "secret"):
                return self.secret_ref(path, value, required=True)
            return {str(k): self.options(path + (k,), v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.options(path + (i,), v) for i, v in enumerate(value)]
        return value

    def names(self, path: tuple, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(path, "expected a list of names, e.g. [alice, bob]")
            return []
        return value


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def parse_catalogue(
    text: str, file: str = "<string>", sample_data_dir: Path | None = None
) -> tuple[Catalogue | None, list[CatalogueIssue]]:
    """Parse and validate catalogue text: ``(catalogue, [])`` or ``(None, issues)``."""
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        return None, [CatalogueIssue(file, 1, None, None, "the file is empty; expected a 'connections' mapping")]
    parsed = parse_text(text, file)
    issues = [_from_parser(file, i) for i in parsed.issues]
    if parsed.data is None:
        return None, issues
    sample_data_dir = sample_data_dir or DEFAULT_SAMPLE_DATA_DIR
    reader = _Reader(file, parsed.lines, sample_data_dir)
    connections = reader.read(parsed.data)
    issues = sorted(issues + reader.issues, key=lambda i: i.line or 0)
    if issues:
        return None, issues
    return Catalogue(connections, file, sample_data_dir, reader.uses_sample_data), []


def _from_parser(file: str, issue) -> CatalogueIssue:
    """A YAML-level problem (bad syntax, duplicate key) from the shared loader, re-addressed."""
    connection, field_path = None, issue.field
    if field_path and field_path.startswith("connections."):
        connection, _, field_path = field_path[len("connections."):].partition(".")
    return CatalogueIssue(file, issue.line, connection, field_path or None, issue.message)


def _read(path: str | os.PathLike) -> tuple[str, list[CatalogueIssue]]:
    file = str(path)
    try:
        return Path(path).read_text(encoding="utf-8"), []
    except UnicodeDecodeError:
        return "", [CatalogueIssue(file, None, None, None, "not UTF-8 text")]
    except OSError as e:
        return "", [CatalogueIssue(file, None, None, None, f"cannot read: {e.strerror}")]


def check_catalogue(path: str | os.PathLike, sample_data_dir: Path | None = None) -> list[CatalogueIssue]:
    """Every problem in the catalogue file `path`; empty when it is valid."""
    text, issues = _read(path)
    return issues or parse_catalogue(text, str(path), sample_data_dir)[1]


def load_catalogue(path: str | os.PathLike, sample_data_dir: Path | None = None) -> Catalogue:
    """Read and validate the catalogue file `path`; raises CatalogueError listing every problem.

    ``{sample_data}`` in URLs becomes `sample_data_dir` (default: the venv's
    ``share/hubforge/sample-data``).
    """
    text, issues = _read(path)
    catalogue = None
    if not issues:
        catalogue, issues = parse_catalogue(text, str(path), sample_data_dir)
    if issues:
        raise CatalogueError(issues)
    return catalogue
