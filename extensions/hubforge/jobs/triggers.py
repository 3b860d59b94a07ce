"""When a job runs: a cron schedule in a time zone, once, or when a new file lands.

A trigger is a small immutable object made from the job's ``trigger`` field by
:func:`parse_trigger`, which checks it (an invalid cron expression or an unknown time
zone is an :class:`~hubforge.jobs.errors.InvalidJob` naming ``trigger.cron`` or
``trigger.timezone``). :meth:`CronTrigger.next_after` uses croniter in the job's time
zone, so "every day at 06:00 Europe/Paris" stays at 06:00 local time across daylight
saving changes; times are stored and compared in UTC.
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

from .errors import InvalidJob

TRIGGER_TYPES = ("cron", "once", "watch")


@dataclass(frozen=True)
class CronTrigger:
    cron: str
    timezone: str = "UTC"
    type: str = "cron"

    def next_after(self, when: datetime) -> datetime:
        """The first fire time strictly after `when` (aware), in UTC."""
        local = when.astimezone(ZoneInfo(self.timezone))
        return croniter(self.cron, local).get_next(datetime).astimezone(UTC)

    def to_json(self) -> dict:
        return {"type": "cron", "cron": self.cron, "timezone": self.timezone}

    def describe(self) -> str:
        return f"cron {self.cron} ({self.timezone})"


@dataclass(frozen=True)
class OnceTrigger:
    type: str = "once"

    def to_json(self) -> dict:
        return {"type": "once"}

    def describe(self) -> str:
        return "once"


@dataclass(frozen=True)
class WatchTrigger:
    """A run for each new file matching `path` (a glob relative to the user's home)."""

    path: str
    parameter: str = "trigger_file"
    type: str = "watch"

    def to_json(self) -> dict:
        return {"type": "watch", "path": self.path, "parameter": self.parameter}

    def describe(self) -> str:
        return f"new files matching {self.path}"

    @property
    def directory(self) -> str:
        """The fixed part of the pattern: the directory to list (relative to home)."""
        return self.path.rpartition("/")[0]

    def matches(self, relative: str) -> bool:
        """Whether `relative` (a path under home) is a file this trigger watches: in the
        watched directory itself (not below it), its name matching the pattern."""
        folder, _, name = relative.rpartition("/")
        return folder == self.directory and fnmatch.fnmatchcase(name, self.path.rpartition("/")[2])


Trigger = CronTrigger | OnceTrigger | WatchTrigger


def parse_trigger(data, field: str = "trigger") -> Trigger:
    """A trigger from its JSON form; None or ``{}`` means once."""
    if data is None or data == {}:
        return OnceTrigger()
    if not isinstance(data, dict):
        raise InvalidJob(field, f"must be an object like {{\"type\": \"cron\", \"cron\": \"0 6 * * *\"}}, got {data!r}")
    kind = data.get("type", "cron" if "cron" in data else "watch" if "path" in data else "once")
    allowed = {"cron": {"type", "cron", "timezone"}, "once": {"type"}, "watch": {"type", "path", "parameter"}}
    if kind not in allowed:
        raise InvalidJob(f"{field}.type", f"unknown trigger type {kind!r}; use one of {', '.join(TRIGGER_TYPES)}")
    for key in data:
        if key not in allowed[kind]:
            raise InvalidJob(f"{field}.{key}", f"not a field of a {kind} trigger; its fields: {', '.join(sorted(allowed[kind]))}")
    if kind == "once":
        return OnceTrigger()
    if kind == "cron":
        return CronTrigger(cron=check_cron(data.get("cron"), f"{field}.cron"),
                           timezone=check_timezone(data.get("timezone", "UTC"), f"{field}.timezone"))
    path = data.get("path")
    if not isinstance(path, str) or not path.strip():
        raise InvalidJob(f"{field}.path", "a glob relative to your home, like 'incoming/*.csv', is required")
    normal = posixpath.normpath(path.strip())
    if normal.startswith(("/", "../")) or normal == ".." or "/../" in f"/{normal}/":
        raise InvalidJob(f"{field}.path", f"must stay inside your home (relative, no '..'), got {path!r}")
    if "**" in normal:
        raise InvalidJob(f"{field}.path", "'**' is not supported; use one directory with a pattern like 'incoming/*.csv'")
    parameter = data.get("parameter", "trigger_file")
    if not isinstance(parameter, str) or not parameter.isidentifier():
        raise InvalidJob(f"{field}.parameter", f"must be a Python identifier, got {parameter!r}")
    if any(ch in normal.rpartition("/")[0] for ch in "*?["):
        raise InvalidJob(f"{field}.path", "only the file name part may hold a pattern, like 'incoming/*.csv'")
    return WatchTrigger(path=normal, parameter=parameter)


def check_cron(expression, field: str = "trigger.cron") -> str:
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidJob(field, "a cron expression like '0 6 * * *' (minute hour day month weekday) is required")
    expression = " ".join(expression.split())
    if len(expression.split()) != 5:
        raise InvalidJob(field, f"{expression!r} must have 5 fields: minute hour day-of-month month day-of-week")
    try:
        croniter(expression, datetime.now(UTC)).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError, KeyError) as e:
        raise InvalidJob(field, f"{expression!r} is not a valid cron expression: {e}") from None
    return expression


def check_timezone(name, field: str = "trigger.timezone") -> str:
    if not isinstance(name, str) or not name:
        raise InvalidJob(field, f"must be a time zone name like 'UTC' or 'Europe/Paris', got {name!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidJob(field, f"unknown time zone {name!r}; use an IANA name like 'Europe/Paris'") from None
    return name
