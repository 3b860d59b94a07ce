"""Reading spawner-profile files: YAML with line numbers, then validation.

PyYAML's ``compose`` (safe tags only) gives a node tree that remembers where
every node starts; :class:`_Converter` turns it into plain Python data plus a
map from JSON paths (``("profiles", 0, "cpu", "limit")``) to 1-based lines,
so that every problem found later can name its line.  Duplicate keys, which
PyYAML silently accepts, are reported.  Mapping keys are always read as text,
so a choice named ``2026.10`` needs no quotes and does not become a float.
YAML merge keys (``<<: *base``) work as in PyYAML.

:func:`load_profiles` is the entry point for the hub and the spawners;
:func:`check_files` is what ``hubforge profiles check PATH`` prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..exceptions import ProfileFileError
from .model import Profile, ProfileIssue, ProfileSet, Source
from .validate import JsonPath, make_issue, validate_file, validate_set

_MERGE_TAG = "tag:yaml.org,2002:merge"
_Pair = tuple[Node, Node]


@dataclass(eq=False)
class ParsedFile:
    """One file's data, where each node came from, and problems found reading it.

    ``data`` is None when the file could not be read or parsed at all.
    """

    file: str
    data: Any = None
    lines: dict[JsonPath, int] = field(default_factory=dict)
    issues: list[ProfileIssue] = field(default_factory=list)


class _Converter:
    """Node tree -> plain data, recording lines and structural YAML problems."""

    def __init__(self) -> None:
        self.lines: dict[JsonPath, int] = {}
        # (path, line, message); turned into issues once the data exists,
        # because an issue names the profile's slug.
        self.problems: list[tuple[JsonPath, int, str]] = []
        self._constructor = SafeConstructor()
        self._active: set[int] = set()

    def convert(self, node: Node, path: JsonPath) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self._active:
            self.problems.append((path, node.start_mark.line + 1, "recursive YAML alias"))
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
            try:
                return self._constructor.construct_object(node, deep=True)
            except ConstructorError as e:
                self.problems.append((path, node.start_mark.line + 1, f"invalid YAML value: {e.problem}"))
                return None
        finally:
            self._active.discard(id(node))

    def _pairs(self, node: MappingNode, path: JsonPath) -> tuple[list[_Pair], list[_Pair]]:
        """Explicit key/value pairs, and pairs brought in by ``<<`` merge keys."""
        explicit: list[_Pair] = []
        merged: list[_Pair] = []
        for key, value in node.value:
            if key.tag != _MERGE_TAG:
                explicit.append((key, value))
                continue
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if isinstance(source, MappingNode):
                    inner_explicit, inner_merged = self._pairs(source, path)
                    merged += inner_explicit + inner_merged
                else:
                    self.problems.append((path, source.start_mark.line + 1, "'<<' must merge a mapping"))
        return explicit, merged

    def _mapping(self, node: MappingNode, path: JsonPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit, merged = self._pairs(node, path)
        for key_node, value_node in explicit:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.problems.append((path, line, "mapping keys must be plain text"))
                continue
            key = key_node.value
            if key in result:
                first = self.lines[path + (key,)]
                message = f"duplicate key {key!r} (first defined on line {first})"
                self.problems.append((path + (key,), line, message))
                continue
            self.lines[path + (key,)] = line
            result[key] = self.convert(value_node, path + (key,))
        # Per YAML's merge-key spec, explicit keys win and earlier merges win.
        for key_node, value_node in merged:
            if isinstance(key_node, ScalarNode) and key_node.value not in result:
                key = key_node.value
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                result[key] = self.convert(value_node, path + (key,))
        return result


def parse_text(text: str, file: str = "<string>") -> ParsedFile:
    """Parse YAML text into a :class:`ParsedFile` (no validation yet)."""
    parsed = ParsedFile(file)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = f"invalid YAML: {e.problem or e.context}"
        if e.context and e.problem and e.context_mark is not None:
            message += f" ({e.context} on line {e.context_mark.line + 1})"
        parsed.issues.append(ProfileIssue(file, mark.line + 1 if mark else None, None, None, message))
        return parsed
    except yaml.YAMLError as e:
        parsed.issues.append(ProfileIssue(file, None, None, None, f"invalid YAML: {e}"))
        return parsed
    if root is None:
        parsed.issues.append(
            ProfileIssue(file, 1, None, None, "the file is empty; expected a mapping with a 'profiles' list")
        )
        return parsed
    converter = _Converter()
    parsed.data = converter.convert(root, ())
    parsed.lines = converter.lines
    parsed.issues += [make_issue(parsed, path, msg, line) for path, line, msg in converter.problems]
    return parsed


def parse_file(path: str | Path) -> ParsedFile:
    """Read and parse one file; unreadable files become an issue, not an exception."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ParsedFile(file, issues=[ProfileIssue(file, None, None, None, "not UTF-8 text")])
    except OSError as e:
        return ParsedFile(file, issues=[ProfileIssue(file, None, None, None, f"cannot read: {e.strerror}")])
    return parse_text(text, file)


def _expand(paths: Iterable[str | Path]) -> tuple[list[Path], list[ProfileIssue]]:
    """Files to read: each file as given, each directory's ``*.yaml``/``*.yml`` sorted."""
    files: list[Path] = []
    issues: list[ProfileIssue] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                message = "no *.yaml or *.yml files in this directory"
                issues.append(ProfileIssue(str(path), None, None, None, message))
            files += found
        elif path.exists():
            files.append(path)
        else:
            issues.append(ProfileIssue(str(path), None, None, None, "no such file or directory"))
    return files, issues


def _read_all(paths: Iterable[str | Path]) -> tuple[list[ParsedFile], list[ProfileIssue]]:
    paths = list(paths)
    if not paths:
        return [], [ProfileIssue("<none>", None, None, None, "no profile files given")]
    files, issues = _expand(paths)
    parsed_files = [parse_file(path) for path in files]
    order = {parsed.file: i for i, parsed in enumerate(parsed_files)}
    file_issues: list[ProfileIssue] = []
    for parsed in parsed_files:
        file_issues += parsed.issues
        if parsed.data is not None:
            file_issues += validate_file(parsed)
    file_issues += validate_set(parsed_files)
    file_issues.sort(key=lambda issue: (order.get(issue.file, -1), issue.line or 0))
    return parsed_files, issues + file_issues


def check_files(paths: Iterable[str | Path]) -> list[ProfileIssue]:
    """Every problem in the given files and directories; empty when all is well."""
    return _read_all(paths)[1]


def load_profiles(paths: Iterable[str | Path]) -> ProfileSet:
    """Load, validate and combine profile files and directories into one set.

    Directories contribute their ``*.yaml`` and ``*.yml`` files in name
    order; profiles keep file order.  Raises :class:`ProfileFileError`
    listing every problem when anything is wrong, including an empty set.
    """
    parsed_files, issues = _read_all(paths)
    if issues:
        raise ProfileFileError(issues)
    profiles = [
        Profile.from_data(entry, Source(parsed.file, parsed.lines[("profiles", index)]))
        for parsed in parsed_files
        for index, entry in enumerate(parsed.data["profiles"])
    ]
    return ProfileSet(tuple(profiles))
