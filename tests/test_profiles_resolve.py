"""Resolving user_options against profiles, and the KubeSpawner translation."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from hubforge.exceptions import OptionsError, UserInputError
from hubforge.profiles import ResolvedProfile, Volume, load_profiles, resolve, to_kubespawner_profile_list

REPO = Path(__file__).resolve().parent.parent
GiB = 1024**3


@pytest.fixture(scope="module")
def shipped():
    return load_profiles([REPO / "spawner_profiles"])


@pytest.fixture(scope="module")
def full():
    return load_profiles([REPO / "tests" / "data" / "profiles" / "good"])


def load_text(tmp_path, text):
    path = tmp_path / "profiles.yaml"
    path.write_text(textwrap.dedent(text))
    return load_profiles([path])


PRECEDENCE = """\
    profiles:
      - slug: p
        display_name: P
        image: base:1
        environment: {ORDER: base, BASE: "1"}
        volumes:
          - {name: base, mount_path: /base, host_path: /srv/base}
        options:
          first:
            display_name: First
            choices:
              a:
                display_name: A
                override:
                  image: first:1
                  environment: {ORDER: first, FIRST: "1"}
                  volumes: [{name: first, mount_path: /first, claim_name: first-pvc}]
            unlisted_choice:
              enabled: true
              override: {environment: {ORDER: "first-unlisted-{value}"}}
          second:
            display_name: Second
            choices:
              b:
                display_name: B
                override: {environment: {ORDER: second}}
            unlisted_choice:
              enabled: true
              override: {image: "{value}", environment: {ORDER: "second-unlisted-{value}"}}
"""


def test_defaults(shipped):
    r = resolve(shipped, {}, "bob", [])
    assert r == ResolvedProfile(
        slug="cpu-small",
        display_name="CPU, small",
        image="hubforge/cpu:2026.11",
        cpu_guarantee=0.5,
        cpu_limit=1.0,
        mem_guarantee=1 * GiB,
        mem_limit=2 * GiB,
        environment={"OMP_NUM_THREADS": "1"},
        choices={"size": "standard", "image": "2026.11"},
    )
    # An empty profile field means the default too (forms may send "").
    assert resolve(shipped, {"profile": "", "image": ""}, "bob") == r


def test_each_option(shipped):
    r = resolve(shipped, {"profile": "cpu-small", "size": "mini", "image": "2026.08"}, "bob")
    assert (r.cpu_guarantee, r.cpu_limit) == (0.25, 0.5)
    assert (r.mem_guarantee, r.mem_limit) == (512 * 1024**2, 1 * GiB)
    assert r.image == "hubforge/cpu:2026.08"
    assert r.choices == {"size": "mini", "image": "2026.08"}

    r = resolve(shipped, {"profile": "cpu-large", "size": "high-memory"}, "bob")
    assert (r.cpu_guarantee, r.cpu_limit, r.mem_guarantee, r.mem_limit) == (2.0, 4.0, 16 * GiB, 32 * GiB)


def test_gpu_profile(shipped):
    r = resolve(shipped, {"profile": "gpu-1"}, "bob")
    assert (r.image, r.gpu_count, r.gpu_resource_name) == ("hubforge/gpu:2026.11", 1, "nvidia.com/gpu")
    assert r.node_selector == {"nvidia.com/gpu.present": "true"}
    assert r.tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_unlisted_accepted_and_wins_over_the_choice_key(shipped):
    r = resolve(
        shipped,
        {"profile": "gpu-1", "image": "2026.08", "image--unlisted-choice": "hubforge/gpu:2026.05"},
        "bob",
    )
    assert r.image == "hubforge/gpu:2026.05"
    assert r.choices == {"image": "unlisted:hubforge/gpu:2026.05"}


def test_unlisted_rejected_with_the_validation_message(shipped):
    with pytest.raises(OptionsError) as info:
        resolve(shipped, {"profile": "gpu-1", "image--unlisted-choice": "evil/miner:latest"}, "bob")
    assert info.value.field == "image--unlisted-choice"
    assert info.value.message == "Must be a hubforge/gpu image, e.g. hubforge/gpu:2026.05"


def test_unlisted_rejected_without_message_names_the_regex(tmp_path):
    profiles = load_text(
        tmp_path,
        """\
        profiles:
          - slug: p
            display_name: P
            options:
              image:
                display_name: Image
                unlisted_choice: {enabled: true, validation_regex: "a+", override: {image: "{value}"}}
        """,
    )
    # fullmatch: "aab" does not match "a+" even though it starts with a match.
    with pytest.raises(OptionsError, match=r"must match a\+") as info:
        resolve(profiles, {"image--unlisted-choice": "aab"}, "u")
    assert info.value.field == "image--unlisted-choice"
    assert resolve(profiles, {"image--unlisted-choice": "aaa"}, "u").image == "aaa"
    # No listed choices: the free text is required.
    with pytest.raises(OptionsError) as info:
        resolve(profiles, {}, "u")
    assert (info.value.field, info.value.message) == ("image--unlisted-choice", "a value for 'Image' is required")


def test_precedence_base_then_options_then_unlisted(tmp_path):
    profiles = load_text(tmp_path, PRECEDENCE)

    r = resolve(profiles, {}, "u")
    # Listed choices in declaration order: "second" beats "first"; mappings
    # merge (BASE and FIRST survive), lists replace (only the "first" volume).
    assert r.environment == {"ORDER": "second", "BASE": "1", "FIRST": "1"}
    assert r.image == "first:1"
    assert r.volumes == (Volume(name="first", mount_path="/first", claim_name="first-pvc"),)

    # Any unlisted value beats every listed choice, even a later option's.
    r = resolve(profiles, {"first--unlisted-choice": "x"}, "u")
    assert r.environment == {"ORDER": "first-unlisted-x", "BASE": "1"}
    assert r.image == "base:1"
    assert r.volumes == (Volume(name="base", mount_path="/base", host_path="/srv/base"),)

    # Unlisted values among themselves also follow declaration order.
    r = resolve(profiles, {"first--unlisted-choice": "x", "second--unlisted-choice": "img:2"}, "u")
    assert r.environment["ORDER"] == "second-unlisted-img:2"
    assert r.image == "img:2"
    assert r.choices == {"first": "unlisted:x", "second": "unlisted:img:2"}


def test_allowed_groups_and_users(shipped, full):
    assert [p.slug for p in shipped.for_user("bob", ["students"])] == ["cpu-small", "cpu-large", "gpu-1"]
    assert len(shipped.for_user("carol", ["power-users"])) == 4
    assert resolve(shipped, {"profile": "cpu-xlarge"}, "carol", ["power-users"]).cpu_limit == 16.0

    # "everything" is the default but restricted to alice or group staff.
    assert full.default.slug == "everything"
    assert full.get("everything").allows("alice", [])
    assert full.get("everything").allows("dave", ["staff"])
    assert not full.get("everything").allows("bob", ["students"])
    # Someone who may not use the default gets their first allowed profile.
    assert resolve(full, {}, "bob").slug == "open"


def test_forbidden_profile_looks_like_an_unknown_one(shipped):
    with pytest.raises(OptionsError) as forbidden:
        resolve(shipped, {"profile": "cpu-xlarge"}, "bob", ["students"])
    with pytest.raises(OptionsError) as unknown:
        resolve(shipped, {"profile": "cpu-xlarge-typo"}, "bob", ["students"])
    assert forbidden.value.field == unknown.value.field == "profile"
    assert forbidden.value.message == "unknown profile 'cpu-xlarge'; choose one of: cpu-small, cpu-large, gpu-1"
    assert unknown.value.message.replace("-typo", "") == forbidden.value.message


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"profile": "nope"}, "profile", "unknown profile 'nope'; choose one of: cpu-small, cpu-large, gpu-1"),
        ({"profile": 3}, "profile", "must be a string, got int"),
        (
            {"profile": "gpu-1", "size": "mini"},
            "size",
            "unknown option for profile 'gpu-1'; valid options: image, image--unlisted-choice",
        ),
        ({"colour": "red"}, "colour", "unknown option for profile 'cpu-small'"),
        ({"image": "1999.01"}, "image", "unknown choice '1999.01'; choose one of: 2026.11, 2026.08"),
        ({"size": ["mini"]}, "size", "must be a string, got list"),
        (
            {"size--unlisted-choice": "huge"},
            "size--unlisted-choice",
            "this option takes no other values; choose one of: standard, mini",
        ),
        ({"image--unlisted-choice": "hubforge/cpu:latest"}, "image--unlisted-choice", "Must be a hubforge/cpu image"),
    ],
)
def test_options_errors_name_their_field(shipped, options, field, message):
    with pytest.raises(OptionsError) as info:
        resolve(shipped, options, "bob", ["students"])
    error = info.value
    assert isinstance(error, UserInputError) and error.status_code == 400
    assert error.field == field
    assert error.message.startswith(message)
    assert str(error) == f"user_options[{field!r}]: {error.message}"


def test_invalid_merge_is_an_error_of_the_option_that_caused_it(tmp_path, full):
    profiles = load_text(
        tmp_path,
        """\
        profiles:
          - slug: p
            display_name: P
            memory: {guarantee: 1G, limit: 2G}
            options:
              size:
                display_name: Size
                choices: {normal: {display_name: Normal}}
              ram:
                display_name: RAM
                choices: {normal: {display_name: Normal}}
                unlisted_choice: {enabled: true, override: {memory: {guarantee: "{value}"}}}
        """,
    )
    assert resolve(profiles, {"ram--unlisted-choice": "1536M"}, "u").mem_guarantee == 1536 * 1024**2
    with pytest.raises(OptionsError) as info:
        resolve(profiles, {"ram--unlisted-choice": "4G"}, "u")
    assert info.value.field == "ram--unlisted-choice"
    assert info.value.message == (
        "this choice makes memory.guarantee invalid: guarantee 4 GiB is greater than limit 2 GiB"
    )
    with pytest.raises(OptionsError) as info:
        resolve(profiles, {"ram--unlisted-choice": "lots"}, "u")
    assert info.value.field == "ram--unlisted-choice"
    assert "not a quantity: 'lots'" in info.value.message

    # The unlisted "tag" option of the full fixture substitutes into memory too.
    with pytest.raises(OptionsError) as info:
        resolve(full, {"tag--unlisted-choice": "x"}, "alice")
    assert info.value.field == "tag--unlisted-choice"


def test_resolved_dict_round_trip(full):
    r = resolve(
        full,
        {
            "profile": "everything",
            "size": "small",
            "image--unlisted-choice": "example/custom:3.1",
            "tag--unlisted-choice": "3G",
        },
        "alice",
    )
    assert r.image == "example/custom:3.1"
    assert (r.cpu_guarantee, r.cpu_limit, r.mem_guarantee, r.mem_limit) == (1.0, 1.0, GiB, 3 * GiB)
    assert r.environment == {"MODE": "base", "KEEP": "1", "IMAGE": "example/custom:3.1", "TAG": "3G"}
    assert (r.gpu_count, r.gpu_resource_name) == (2, "example.com/gpu")
    assert r.choices == {"size": "small", "image": "unlisted:example/custom:3.1", "tag": "unlisted:3G"}
    data = json.loads(json.dumps(r.to_dict()))
    assert ResolvedProfile.from_dict(data) == r
    assert data["volumes"][0] == {"name": "data", "mount_path": "/data", "host_path": "/srv/data", "read_only": True}
    # Older saved state with fewer keys still loads.
    assert ResolvedProfile.from_dict({"slug": "old"}) == ResolvedProfile(slug="old", display_name="old")


def test_kubespawner_translation_of_shipped_gpu_profile(shipped):
    entries = to_kubespawner_profile_list(shipped)
    assert [e["slug"] for e in entries] == ["cpu-small", "cpu-large", "cpu-xlarge", "gpu-1"]
    assert [e["default"] for e in entries] == [True, False, False, False]
    assert entries[3] == {
        "display_name": "GPU, one",
        "slug": "gpu-1",
        "description": "One NVIDIA GPU with CUDA, for deep learning.",
        "default": False,
        "kubespawner_override": {
            "image": "hubforge/gpu:2026.11",
            "cpu_guarantee": 4.0,
            "cpu_limit": 8.0,
            "mem_guarantee": "16G",
            "mem_limit": "32G",
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "environment": {"OMP_NUM_THREADS": "8"},
        },
        "profile_options": {
            "image": {
                "display_name": "Image version",
                "choices": {
                    "2026.11": {
                        "display_name": "2026.11 (current, CUDA 12)",
                        "default": True,
                        "kubespawner_override": {"image": "hubforge/gpu:2026.11"},
                    },
                    "2026.08": {
                        "display_name": "2026.08 (previous, CUDA 12)",
                        "default": False,
                        "kubespawner_override": {"image": "hubforge/gpu:2026.08"},
                    },
                },
                "unlisted_choice": {
                    "enabled": True,
                    "display_name": "Other hubforge/gpu tag",
                    "validation_regex": "^hubforge/gpu:[0-9]{4}\\.[0-9]{2}(\\.[0-9]+)?$",
                    "validation_message": "Must be a hubforge/gpu image, e.g. hubforge/gpu:2026.05",
                    "kubespawner_override": {"image": "{value}"},
                },
            }
        },
    }


def test_kubespawner_filters_by_user_and_marks_the_users_default(shipped, full):
    assert [e["slug"] for e in to_kubespawner_profile_list(shipped, "bob", ["students"])] == [
        "cpu-small",
        "cpu-large",
        "gpu-1",
    ]
    assert len(to_kubespawner_profile_list(shipped, "carol", ["power-users"])) == 4
    entries = to_kubespawner_profile_list(full, "bob", [])
    assert [(e["slug"], e["default"]) for e in entries] == [("open", True), ("plain", False)]


def test_kubespawner_translation_of_volumes_options_and_gpu_overrides(tmp_path):
    profiles = load_text(
        tmp_path,
        """\
        profiles:
          - slug: p
            display_name: P
            memory: {limit: 1536M}
            gpu: {count: 1, resource_name: example.com/gpu}
            volumes:
              - {name: data, mount_path: /data, host_path: /srv/data, read_only: true}
              - {name: home, mount_path: /home/jovyan, claim_name: home-pvc}
            options:
              gpus:
                display_name: GPUs
                choices:
                  none: {display_name: None, override: {gpu: {count: 0}}}
                  two: {display_name: Two, default: true, override: {gpu: {count: 2}, memory: {guarantee: 1G}}}
                unlisted_choice:
                  enabled: true
                  validation_regex: "[0-9]+G"
                  override: {memory: {limit: "{value}"}}
        """,
    )
    (entry,) = to_kubespawner_profile_list(profiles)
    assert entry["kubespawner_override"] == {
        "mem_limit": "1536M",
        "extra_resource_limits": {"example.com/gpu": "1"},
        "volumes": [
            {"name": "data", "hostPath": {"path": "/srv/data"}},
            {"name": "home", "persistentVolumeClaim": {"claimName": "home-pvc"}},
        ],
        "volume_mounts": [
            {"name": "data", "mountPath": "/data", "readOnly": True},
            {"name": "home", "mountPath": "/home/jovyan", "readOnly": False},
        ],
    }
    assert entry["profile_options"]["gpus"] == {
        "display_name": "GPUs",
        "choices": {
            # KubeSpawner merges dicts, so "no GPU" must say "0" explicitly.
            "none": {
                "display_name": "None",
                "default": False,
                "kubespawner_override": {"extra_resource_limits": {"example.com/gpu": "0"}},
            },
            "two": {
                "display_name": "Two",
                "default": True,
                "kubespawner_override": {"mem_guarantee": "1G", "extra_resource_limits": {"example.com/gpu": "2"}},
            },
        },
        "unlisted_choice": {
            "enabled": True,
            "display_name": "Other",
            # Anchored, because KubeSpawner uses re.match where HubForge uses re.fullmatch.
            "validation_regex": "^(?:[0-9]+G)$",
            "kubespawner_override": {"mem_limit": "{value}"},
        },
    }
    # The same profile resolved by HubForge itself agrees.
    r = resolve(profiles, {"gpus": "none"}, "u")
    assert (r.gpu_count, r.gpu_resource_name, r.mem_limit) == (0, "example.com/gpu", 1536 * 1024**2)
    assert resolve(profiles, {"gpus--unlisted-choice": "3G"}, "u").mem_limit == 3 * GiB
