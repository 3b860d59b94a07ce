"""Loading and validating spawner-profile files: every problem, with its place.

Each ``tests/data/profiles/bad-*.yaml`` fixture holds one kind of mistake;
the tests check the file, line, profile and field of the issue reported,
not just that loading fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hubforge.exceptions import ConfigError, HubForgeError, ProfileFileError
from hubforge.profiles import (
    ProfileIssue,
    check_files,
    format_bytes,
    format_quantity,
    load_profiles,
    parse_quantity,
)
from hubforge.profiles.loader import parse_text
from hubforge.profiles.validate import validate_file

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "profiles"
SHIPPED = REPO / "spawner_profiles"


def issues_of(name: str) -> list[ProfileIssue]:
    return check_files([DATA / name])


def test_shipped_profiles_are_valid():
    assert check_files([SHIPPED]) == []
    profiles = load_profiles([SHIPPED])
    assert [p.slug for p in profiles.profiles] == ["cpu-small", "cpu-large", "cpu-xlarge", "gpu-1"]
    assert profiles.default.slug == "cpu-small"
    assert profiles.get("cpu-small").memory.limit == 2 * 1024**3
    assert profiles.get("gpu-1").gpu.count == 1
    assert profiles.get("gpu-1").allows("anyone", [])
    xlarge = profiles.get("cpu-xlarge")
    assert xlarge.allowed_groups == ("power-users",)
    assert not xlarge.allows("bob", ["students"])
    assert xlarge.allows("carol", ["students", "power-users"])
    # The YAML alias shares one option definition between the CPU profiles.
    assert profiles.get("cpu-large").options["image"] == xlarge.options["image"]
    assert set(profiles.get("cpu-small").options["image"].choices) == {"2026.11", "2026.08"}


def test_good_fixtures_are_valid():
    profiles = load_profiles([DATA / "good"])
    # Files in a directory load in name order: full.yaml before minimal.yaml.
    assert [p.slug for p in profiles.profiles] == ["everything", "open", "plain"]
    everything = profiles.get("everything")
    assert everything.source.file.endswith("full.yaml")
    assert everything.source.line == 3
    assert everything.memory.guarantee == 1024**3
    assert everything.volumes[1].claim_name == "scratch-pvc"
    # Keys are text: an unquoted 2.10 stays "2.10", not the float 2.1.
    assert list(everything.options["image"].choices) == ["1", "2.10"]
    # Merge key: explicit keys win over merged ones.
    assert profiles.get("open").environment == {"MODE": "open", "KEEP": "1"}


# (fixture, line, profile, field, part of the message)
SINGLE_ISSUE_CASES = [
    ("bad-yaml-syntax.yaml", 4, None, None, "invalid YAML: found unexpected end of stream"),
    ("bad-duplicate-key.yaml", 5, "twice", "cpu", "duplicate key 'cpu' (first defined on line 4)"),
    ("bad-unknown-field.yaml", 4, "typo", "cpus", "unknown field 'cpus' (did you mean 'cpu'?)"),
    ("bad-type.yaml", 6, "wrong-type", "cpu.limit", "must be a number, got 'abc'"),
    ("bad-missing-required.yaml", 2, "nameless", "display_name", "missing required field 'display_name'"),
    ("bad-two-defaults.yaml", 7, "two", "default", "more than one default profile; 'one' at"),
    ("bad-quantity.yaml", 6, "quantity", "memory.limit", "not a quantity: '2 gigs'"),
    ("bad-cpu-guarantee.yaml", 5, "cpu-inverted", "cpu.guarantee", "guarantee 4 is greater than limit 2"),
    (
        "bad-memory-guarantee.yaml",
        5,
        "memory-inverted",
        "memory.guarantee",
        "guarantee 4 GiB is greater than limit 2 GiB",
    ),
    (
        "bad-regex.yaml",
        9,
        "regex",
        "options.image.unlisted_choice.validation_regex",
        "invalid regular expression: missing )",
    ),
    (
        "bad-two-default-choices.yaml",
        13,
        "choices",
        "options.image.choices.b.default",
        "more than one default choice; 'a' is already the default",
    ),
    ("bad-empty-choices.yaml", 7, "nothing-to-pick", "options.image.choices", "nothing to pick"),
    (
        "bad-value-placeholder.yaml",
        10,
        "placeholder",
        "options.cores.unlisted_choice.override.cpu.limit",
        "'{value}' can only be substituted into text fields; this field must be a number",
    ),
    ("bad-volume-both.yaml", 5, "volume-both", "volumes[0]", "has both host_path and claim_name"),
    ("bad-empty-profiles.yaml", 2, None, "profiles", "the file defines no profiles"),
    ("bad-empty-file.yaml", 1, None, None, "the file is empty"),
    ("bad-empty-allowed.yaml", 4, "nobody", "allowed_users", "must not be empty; leave the field out"),
]


@pytest.mark.parametrize(("name", "line", "profile", "field", "message"), SINGLE_ISSUE_CASES)
def test_each_error_kind_is_located(name, line, profile, field, message):
    issues = issues_of(name)
    assert len(issues) == 1, issues
    issue = issues[0]
    assert (issue.file, issue.line, issue.profile, issue.field) == (str(DATA / name), line, profile, field)
    assert message in issue.message


def test_missing_slug_is_named_by_index_and_bad_slug_by_value():
    missing, bad = issues_of("bad-slug.yaml")
    assert (missing.line, missing.profile, missing.field) == (2, "#0", "slug")
    assert missing.message == "missing required field 'slug'"
    assert (bad.line, bad.profile, bad.field) == (3, "Not_A_Slug", "slug")
    assert bad.message.startswith("must be 1-63 lowercase letters, digits or '-'")


def test_duplicate_slug_in_one_file_reports_both_places():
    first, second = issues_of("bad-duplicate-slug.yaml")
    path = DATA / "bad-duplicate-slug.yaml"
    assert (first.line, first.profile, first.field) == (2, "same", "slug")
    assert first.message == f"duplicate slug 'same'; also defined at {path}:4"
    assert (second.line, second.message) == (4, f"duplicate slug 'same'; also defined at {path}:2")


def test_duplicate_slug_across_files_reports_both_places():
    a, b = check_files([DATA / "cross-file-duplicate"])
    dir_ = DATA / "cross-file-duplicate"
    assert (a.file, a.line, a.profile, a.field) == (str(dir_ / "a.yaml"), 2, "shared", "slug")
    assert a.message == f"duplicate slug 'shared'; also defined at {dir_ / 'b.yaml'}:4"
    assert (b.file, b.line) == (str(dir_ / "b.yaml"), 4)
    assert b.message == f"duplicate slug 'shared'; also defined at {dir_ / 'a.yaml'}:2"


def test_more_than_one_default_across_files():
    # Directories take *.yml as well as *.yaml.
    (issue,) = check_files([DATA / "cross-file-default"])
    dir_ = DATA / "cross-file-default"
    assert (issue.file, issue.line, issue.profile, issue.field) == (str(dir_ / "b.yml"), 4, "b-default", "default")
    assert f"'a-default' at {dir_ / 'a.yaml'}:4 is already the default" in issue.message


def test_volume_without_source_duplicate_name_and_relative_path():
    issues = issues_of("bad-volume-neither.yaml")
    assert [(i.line, i.field, i.message) for i in issues] == [
        (5, "volumes[0]", "needs one of host_path or claim_name"),
        (7, "volumes[1].name", "duplicate name 'data' (also volumes[0])"),
        (8, "volumes[1].mount_path", "must be an absolute path (starting with '/'), got 'relative/path'"),
    ]


def test_environment_names_and_values():
    issues = issues_of("bad-environment.yaml")
    assert [(i.line, i.field, i.message) for i in issues] == [
        (6, "environment.1BAD", "invalid name '1BAD': must be letters, digits or '_', not starting with a digit"),
        (7, "environment.NUMBER", "must be a string, got 1"),
    ]


def test_choice_override_is_checked_over_its_profile():
    issues = issues_of("bad-choice-override.yaml")
    assert [(i.line, i.profile, i.field, i.message) for i in issues] == [
        (
            12,
            "choice-override",
            "options.size.choices.tiny.override.cpu",
            "guarantee 1 is greater than limit 0.5",
        ),
        (
            13,
            "choice-override",
            "options.size.choices.tiny.override.allowed_users",
            "unknown field 'allowed_users'; expected one of: image, cpu, memory, gpu, environment, volumes",
        ),
    ]


def test_file_with_several_errors_reports_all_of_them():
    issues = issues_of("bad-several.yaml")
    assert [(i.line, i.profile, i.field) for i in issues] == [
        (4, "first", "cpu.guarantee"),
        (5, "first", "memory.limit"),
        (6, "second", "display_name"),
        (7, "second", "display"),
        (8, "second", "gpu.count"),
        (10, "second", "options.Image"),
    ]
    assert issues[3].message == "unknown field 'display' (did you mean 'display_name'?)"
    assert issues[4].message == "must be at least 0, got -1"


def test_load_raises_with_every_issue_one_per_line():
    with pytest.raises(ProfileFileError) as info:
        load_profiles([DATA / "bad-several.yaml"])
    error = info.value
    assert isinstance(error, ConfigError) and isinstance(error, HubForgeError)
    assert len(error.issues) == 6
    lines = str(error).splitlines()
    assert lines == [str(issue) for issue in error.issues]
    assert lines[0] == (
        f"{DATA / 'bad-several.yaml'}:4: profile 'first': field 'cpu.guarantee': "
        "guarantee 2 is greater than limit 1"
    )


def test_issue_format_without_profile_or_line():
    assert str(ProfileIssue("p.yaml", None, None, None, "cannot read")) == "p.yaml: cannot read"
    assert str(ProfileIssue("p.yaml", 3, None, "profiles", "bad")) == "p.yaml:3: field 'profiles': bad"


def test_missing_paths_and_empty_sets(tmp_path):
    (issue,) = check_files([tmp_path / "nope.yaml"])
    assert issue.message == "no such file or directory"
    (issue,) = check_files([tmp_path])
    assert (issue.file, issue.message) == (str(tmp_path), "no *.yaml or *.yml files in this directory")
    with pytest.raises(ProfileFileError, match="no profile files given"):
        load_profiles([])


@pytest.mark.parametrize(
    ("text", "line", "profile", "field", "message"),
    [
        ("a: &x [*x]\n", 1, None, "a[0]", "recursive YAML alias"),
        ("profiles: !python/object:os.system x\n", 1, None, "profiles", "invalid YAML value: could not"),
        ("profiles:\n  - {<<: [1], slug: a}\n", 2, "a", None, "'<<' must merge a mapping"),
        ("? [a]\n: 1\n", 1, None, None, "mapping keys must be plain text"),
        ("a: 1\n---\nb: 2\n", 2, None, None, "invalid YAML: but found another document"),
    ],
)
def test_yaml_corner_cases_become_issues(text, line, profile, field, message):
    (issue,) = parse_text(text, "x.yaml").issues
    assert (issue.file, issue.line, issue.profile, issue.field) == ("x.yaml", line, profile, field)
    assert issue.message.startswith(message)


def test_non_finite_cpu_is_refused():
    parsed = parse_text("profiles:\n  - {slug: a, display_name: A, cpu: {guarantee: .nan, limit: .inf}}\n", "x.yaml")
    assert [(i.line, i.field, i.message) for i in validate_file(parsed)] == [
        (2, "cpu.guarantee", "must be a finite number, got nan"),
        (2, "cpu.limit", "must be a finite number, got inf"),
    ]


@pytest.mark.parametrize("source", [DATA / "good", SHIPPED])
def test_to_data_round_trips(tmp_path, source):
    profiles = load_profiles([source])
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(profiles.to_data(), sort_keys=False))
    again = load_profiles([copy])
    assert again.to_data() == profiles.to_data()
    assert [p.slug for p in again.profiles] == [p.slug for p in profiles.profiles]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (1536, 1536),
        ("1024", 1024),
        ("512M", 512 * 1024**2),
        ("2G", 2 * 1024**3),
        ("1.5Gi", 1536 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("1T", 1024**4),
        ("4 Ki", 4096),
        ("100B", 100),
    ],
)
def test_parse_quantity(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "G", "2 gigs", "-1G", "1.5.2G", "2g", "5i", True, -3, 1.5, None])
def test_parse_quantity_rejects(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_format_bytes_and_quantity():
    assert format_bytes(100) == "100 B"
    assert format_bytes(2 * 1024**3) == "2 GiB"
    assert format_bytes(1536 * 1024**2) == "1.5 GiB"
    assert format_bytes(512 * 1024**2) == "512 MiB"
    assert format_quantity(2 * 1024**3) == "2G"
    assert format_quantity(1536 * 1024**2) == "1536M"
    assert format_quantity(1000) == "1000"
    for n in (1, 1000, 1536 * 1024**2, 3 * 1024**4):
        assert parse_quantity(format_quantity(n)) == n
