"""Checks on spawner-profile files, reporting every problem with its location.

Two passes run over each parsed file and neither stops at the first problem:

1. structure, with the JSON Schema of :mod:`.schema` (jsonschema's
   ``iter_errors``), whose messages are rewritten for people
   ("must be a number, got 'abc'", "unknown field 'cpus' (did you mean
   'cpu'?)");
2. meaning: guarantee <= limit, memory quantities that parse, exactly one of
   ``host_path``/``claim_name``, compilable regexes, one default choice per
   option, options that offer something to pick, and every listed choice
   merged over its profile still valid.

:func:`validate_set` then checks what spans files: unique slugs and at most
one default profile.  Problems are located by JSON path (``("profiles", 0,
"cpu", "limit")``) and turned into :class:`~.model.ProfileIssue` objects with
file, line, profile slug and dotted field.  :func:`resource_problems` is
shared with :mod:`.resolve`, which re-checks a user's merged choices.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import functools

from .model import (
    RESOURCE_FIELDS,
    VALUE_PLACEHOLDER,
    ProfileIssue,
    deep_merge,
    format_bytes,
    format_number,
    parse_quantity,
)
from .schema import OVERRIDE_SCHEMA, PATTERN_DESCRIPTIONS, PROFILE_FILE_SCHEMA

if TYPE_CHECKING:
    from jsonschema import ValidationError

    from .loader import ParsedFile

JsonPath = tuple[str | int, ...]
Problem = tuple[JsonPath, str]

@functools.cache
def _validator(which: str):
    # jsonschema takes about a second to import (its format checkers); only pay for it
    # when a file is actually validated, not for `hubforge --help` or a service start.
    from jsonschema import Draft202012Validator

    return Draft202012Validator(PROFILE_FILE_SCHEMA if which == "file" else OVERRIDE_SCHEMA)

_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "empty",
}


def _show(instance: Any) -> str:
    """A short description of a value for messages."""
    if isinstance(instance, bool):
        return "true" if instance else "false"
    if instance is None:
        return "nothing"
    if isinstance(instance, Mapping):
        return "a mapping"
    if isinstance(instance, list):
        return "a list"
    text = repr(instance)
    return text if len(text) <= 60 else text[:57] + "..."


def _in_unlisted_override(path: JsonPath) -> bool:
    return any(
        path[i] == "unlisted_choice" and path[i + 1] == "override" for i in range(len(path) - 1)
    )


def _rewrite(error: "ValidationError") -> list[Problem]:
    """Turn one jsonschema error into readable problems (possibly several)."""
    path: JsonPath = tuple(error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance

    if kind == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        problems = []
        for key in instance:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; expected one of: {', '.join(allowed)}"
            problems.append((path + (key,), f"unknown field {key!r}{hint}"))
        return problems

    if kind == "required":
        # jsonschema yields one error per missing key but names it only in
        # its message; report every missing key and let the caller dedupe.
        return [(path + (key,), f"missing required field {key!r}") for key in value if key not in instance]

    if kind == "pattern" and "propertyNames" in error.relative_schema_path:
        # The bad mapping key itself; point at its own line.
        description = PATTERN_DESCRIPTIONS.get(value, f"must match {value}")
        return [(path + (instance,), f"invalid name {instance!r}: {description}")]

    if kind == "type":
        expected = value if isinstance(value, list) else [value]
        if isinstance(instance, str) and VALUE_PLACEHOLDER in instance and _in_unlisted_override(path):
            message = (
                f"'{VALUE_PLACEHOLDER}' can only be substituted into text fields; "
                f"this field must be {' or '.join(_TYPE_NAMES[t] for t in expected)}"
            )
        elif expected == ["integer", "string"]:
            message = f"must be a number of bytes or a quantity such as '2G', got {_show(instance)}"
        else:
            names = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
            message = f"must be {names}, got {_show(instance)}"
        return [(path, message)]

    if kind == "pattern":
        description = PATTERN_DESCRIPTIONS.get(value, f"must match {value}")
        return [(path, f"{description}, got {_show(instance)}")]
    if kind == "enum":
        return [(path, f"must be one of: {', '.join(map(str, value))}; got {_show(instance)}")]
    if kind == "exclusiveMinimum":
        return [(path, f"must be greater than {value}, got {_show(instance)}")]
    if kind == "minimum":
        return [(path, f"must be at least {value}, got {_show(instance)}")]
    if kind == "minItems" and path == ("profiles",):
        return [(path, "the file defines no profiles")]
    if kind == "minItems" and path and path[-1] in ("allowed_users", "allowed_groups"):
        return [(path, "must not be empty; leave the field out to allow everyone")]
    if kind in ("minItems", "minLength"):
        return [(path, "must not be empty")]
    return [(path, error.message)]


def schema_problems(data: Any, which: str = "file") -> list[Problem]:
    """Structural problems of ``data`` (a whole file, or an ``"override"``), in document order."""
    problems: list[Problem] = []
    seen: set[Problem] = set()
    for error in _validator(which).iter_errors(data):
        for problem in _rewrite(error):
            if problem not in seen:
                seen.add(problem)
                problems.append(problem)
    return problems


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_placeholder(x: Any) -> bool:
    return isinstance(x, str) and VALUE_PLACEHOLDER in x


def resource_problems(data: Mapping[str, Any], placeholders: bool = False) -> list[Problem]:
    """Semantic problems of the resource fields of a profile or merged override.

    Only looks at well-typed values (the schema reports the others).  With
    ``placeholders=True`` (an unlisted choice's override, before the user's
    text is known) memory values containing ``{value}`` are skipped: they are
    checked when a user's value is substituted.
    """
    problems: list[Problem] = []

    cpu = data.get("cpu")
    if isinstance(cpu, Mapping):
        for key in ("guarantee", "limit"):
            # YAML's .inf and .nan are numbers to the schema but useless here.
            if _is_number(cpu.get(key)) and not math.isfinite(cpu[key]):
                problems.append((("cpu", key), f"must be a finite number, got {cpu[key]}"))
        g, lim = cpu.get("guarantee"), cpu.get("limit")
        if _is_number(g) and _is_number(lim) and g > lim:
            message = f"guarantee {format_number(g)} is greater than limit {format_number(lim)}"
            problems.append((("cpu", "guarantee"), message))

    memory = data.get("memory")
    if isinstance(memory, Mapping):
        parsed: dict[str, int] = {}
        for key in ("guarantee", "limit"):
            value = memory.get(key)
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                continue
            if placeholders and _is_placeholder(value):
                continue
            try:
                parsed[key] = parse_quantity(value)
            except ValueError as e:
                problems.append((("memory", key), str(e)))
                continue
            if parsed[key] == 0:
                problems.append((("memory", key), f"must be greater than 0, got {_show(value)}"))
        if len(parsed) == 2 and parsed["guarantee"] > parsed["limit"]:
            problems.append(
                (
                    ("memory", "guarantee"),
                    f"guarantee {format_bytes(parsed['guarantee'])} is greater than "
                    f"limit {format_bytes(parsed['limit'])}",
                )
            )

    volumes = data.get("volumes")
    if isinstance(volumes, list):
        names: dict[str, int] = {}
        mounts: dict[str, int] = {}
        for i, volume in enumerate(volumes):
            if not isinstance(volume, Mapping):
                continue
            has_host, has_claim = "host_path" in volume, "claim_name" in volume
            if has_host and has_claim:
                problems.append((("volumes", i), "has both host_path and claim_name; give exactly one"))
            elif not has_host and not has_claim:
                problems.append((("volumes", i), "needs one of host_path or claim_name"))
            for key, seen in (("name", names), ("mount_path", mounts)):
                value = volume.get(key)
                if not isinstance(value, str):
                    continue
                if value in seen:
                    problems.append(
                        (("volumes", i, key), f"duplicate {key} {value!r} (also volumes[{seen[value]}])")
                    )
                else:
                    seen[value] = i
    return problems


def override_problems(data: Mapping[str, Any]) -> list[Problem]:
    """Structural and semantic problems of resource data after a merge."""
    return schema_problems(data, "override") + resource_problems(data)


def _anchor(override: Any, path: JsonPath) -> JsonPath:
    """The longest prefix of ``path`` that exists in ``override``."""
    prefix: JsonPath = ()
    node = override
    for key in path:
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            break
        prefix += (key,)
    return prefix


def profile_problems(profile: Mapping[str, Any]) -> list[Problem]:
    """Semantic problems inside one profile entry (paths relative to it)."""
    problems = resource_problems(profile)
    options = profile.get("options")
    if not isinstance(options, Mapping):
        return problems

    base = {key: profile[key] for key in RESOURCE_FIELDS if key in profile}
    base_messages = {message for _, message in resource_problems(base)}

    def merged_problems(override: Any, at: JsonPath, placeholders: bool) -> None:
        # Each choice must make sense on its own over the profile; problems
        # the profile already has are reported once, at the profile.
        if not isinstance(override, Mapping):
            return
        for path, message in resource_problems(deep_merge(base, override), placeholders):
            if message not in base_messages:
                problems.append((at + _anchor(override, path), message))

    for name, option in options.items():
        if not isinstance(option, Mapping):
            continue
        at: JsonPath = ("options", name)
        choices = option.get("choices", {})
        unlisted = option.get("unlisted_choice")
        if not isinstance(choices, Mapping):
            choices = {}

        defaults = [
            slug for slug, c in choices.items() if isinstance(c, Mapping) and c.get("default") is True
        ]
        for slug in defaults[1:]:
            problems.append(
                (
                    at + ("choices", slug, "default"),
                    f"more than one default choice; {defaults[0]!r} is already the default",
                )
            )

        unlisted_enabled = isinstance(unlisted, Mapping) and unlisted.get("enabled") is True
        if not choices and not unlisted_enabled:
            problems.append(
                (
                    at + (("choices",) if "choices" in option else ()),
                    "has no choices and no enabled unlisted_choice, so there is nothing to pick",
                )
            )

        for slug, choice in choices.items():
            if isinstance(choice, Mapping):
                merged_problems(choice.get("override"), at + ("choices", slug, "override"), False)

        if isinstance(unlisted, Mapping):
            regex = unlisted.get("validation_regex")
            if isinstance(regex, str):
                try:
                    re.compile(regex)
                except re.error as e:
                    problems.append(
                        (at + ("unlisted_choice", "validation_regex"), f"invalid regular expression: {e}")
                    )
            merged_problems(unlisted.get("override"), at + ("unlisted_choice", "override"), True)
    return problems


def dotted_path(path: Iterable[str | int]) -> str:
    """``("cpu", "limit")`` -> ``"cpu.limit"``; ``("volumes", 0)`` -> ``"volumes[0]"``."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _line(lines: Mapping[JsonPath, int], path: JsonPath) -> int | None:
    # Fall back to the closest ancestor that has a line: a missing key is
    # reported where its mapping starts.
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def profile_label(data: Any, index: int) -> str:
    """A profile's slug, or ``#<index>`` when it has no usable one."""
    try:
        slug = data["profiles"][index]["slug"]
    except (KeyError, IndexError, TypeError):
        slug = None
    return slug if isinstance(slug, str) and slug else f"#{index}"


def make_issue(
    parsed: ParsedFile, path: JsonPath, message: str, line: int | None = None
) -> ProfileIssue:
    """Locate a problem in ``parsed`` and turn it into a :class:`ProfileIssue`.

    ``line`` overrides the line found from ``path`` (a duplicate key shares
    its path with the first occurrence but not its line).
    """
    if line is None:
        line = _line(parsed.lines, path)
    if len(path) >= 2 and path[0] == "profiles" and isinstance(path[1], int):
        return ProfileIssue(
            parsed.file, line, profile_label(parsed.data, path[1]), dotted_path(path[2:]) or None, message
        )
    return ProfileIssue(parsed.file, line, None, dotted_path(path) or None, message)


def validate_file(parsed: ParsedFile) -> list[ProfileIssue]:
    """Every structural and semantic problem of one parsed file."""
    problems = schema_problems(parsed.data)
    profiles = parsed.data.get("profiles") if isinstance(parsed.data, Mapping) else None
    if isinstance(profiles, list):
        for index, profile in enumerate(profiles):
            if isinstance(profile, Mapping):
                problems += [(("profiles", index) + path, msg) for path, msg in profile_problems(profile)]
    issues = [make_issue(parsed, path, message) for path, message in problems]
    issues.sort(key=lambda issue: issue.line or 0)
    return issues


def _entries(parsed_files: Iterable[ParsedFile]):
    for parsed in parsed_files:
        profiles = parsed.data.get("profiles") if isinstance(parsed.data, Mapping) else None
        if isinstance(profiles, list):
            for index, profile in enumerate(profiles):
                if isinstance(profile, Mapping):
                    yield parsed, index, profile


def validate_set(parsed_files: list[ParsedFile]) -> list[ProfileIssue]:
    """Problems that span files: duplicate slugs and more than one default."""
    issues: list[ProfileIssue] = []

    def where(parsed: ParsedFile, index: int, key: str) -> str:
        return f"{parsed.file}:{_line(parsed.lines, ('profiles', index, key))}"

    by_slug: dict[str, list[tuple[ParsedFile, int]]] = {}
    defaults: list[tuple[ParsedFile, int]] = []
    for parsed, index, profile in _entries(parsed_files):
        slug = profile.get("slug")
        if isinstance(slug, str):
            by_slug.setdefault(slug, []).append((parsed, index))
        if profile.get("default") is True:
            defaults.append((parsed, index))

    for slug, places in by_slug.items():
        if len(places) < 2:
            continue
        for parsed, index in places:
            others = ", ".join(where(p, i, "slug") for p, i in places if not (p is parsed and i == index))
            message = f"duplicate slug {slug!r}; also defined at {others}"
            issues.append(make_issue(parsed, ("profiles", index, "slug"), message))

    if len(defaults) > 1:
        first, first_index = defaults[0]
        first_slug = profile_label(first.data, first_index)
        for parsed, index in defaults[1:]:
            issues.append(
                make_issue(
                    parsed,
                    ("profiles", index, "default"),
                    f"more than one default profile; {first_slug!r} at "
                    f"{where(first, first_index, 'default')} is already the default",
                )
            )
    return issues
