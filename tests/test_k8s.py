"""The Kubernetes spawner without a cluster: the pods and PVCs it would create.

Every shipped profile and every option choice (and a typed, unlisted value) is built
into a pod by KubeSpawner's own code (``hubforge.k8s``), validated against the
Kubernetes OpenAPI schema with kubernetes-validate (strict: unknown fields fail), and
compared with what HubForge's resolver says the server gets.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import kubernetes_validate
import pytest
from kubespawner import KubeSpawner
from tornado.web import HTTPError
from traitlets.config import Config

from hubforge.k8s import make_user_pod, make_user_pvc, offline_spawner
from hubforge.profiles import load_profiles, resolve, to_kubespawner_profile_list
from hubforge.spawners.base import ProfileSpawnerMixin
from hubforge.spawners.kubernetes import HubForgeKubeSpawner, user_profile_list

ROOT = Path(__file__).resolve().parent.parent
PROFILES = [ROOT / "spawner_profiles"]
SHIPPED = load_profiles(PROFILES)
#: A Kubernetes release kubernetes-validate ships schemas for (1.25-1.37).
K8S_VERSION = "1.33"
#: A user who may use every shipped profile (cpu-xlarge needs power-users).
CAROL = ("carol", ["power-users"])
#: The toleration Zero to JupyterHub gives every user pod.
DEDICATED = {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}


def _unlisted_example(option) -> str:
    """A typed value the option accepts: a listed image with another tag."""
    image = next(iter(option.choices.values())).override["image"]
    value = image.rpartition(":")[0] + ":2026.05"
    assert option.unlisted.check(value) is None, f"{value!r} no longer passes {option.name}'s regex"
    return value


def _cases():
    """(id, user_options): each profile's default, each listed choice, each unlisted value."""
    for profile in SHIPPED.profiles:
        yield profile.slug, {"profile": profile.slug}
        for name, option in profile.options.items():
            for choice in option.choices:
                yield f"{profile.slug}-{name}-{choice}", {"profile": profile.slug, name: choice}
            if option.unlisted_enabled:
                value = _unlisted_example(option)
                unlisted = {"profile": profile.slug, f"{name}--unlisted-choice": value}
                yield f"{profile.slug}-{name}-unlisted", unlisted


CASES = list(_cases())


def _container(pod):
    (container,) = pod["spec"]["containers"]
    return container


@pytest.mark.parametrize("options", [c[1] for c in CASES], ids=[c[0] for c in CASES])
async def test_every_profile_and_choice_builds_a_valid_pod(options, caplog):
    pod = await make_user_pod(PROFILES, options, *CAROL)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert "profile_list gave" not in caplog.text  # KubeSpawner and HubForge's resolver agree

    expected = resolve(SHIPPED, options, *CAROL)
    container = _container(pod)
    resources = container["resources"]
    assert container["image"] == expected.image
    assert float(resources["limits"]["cpu"]) == expected.cpu_limit
    assert float(resources["requests"]["cpu"]) == expected.cpu_guarantee
    assert int(resources["limits"]["memory"]) == expected.mem_limit
    assert int(resources["requests"]["memory"]) == expected.mem_guarantee
    if expected.gpu_count:
        assert resources["limits"][expected.gpu_resource_name] == str(expected.gpu_count)
        assert pod["spec"]["nodeSelector"].items() >= expected.node_selector.items()
        assert all(t in pod["spec"]["tolerations"] for t in expected.tolerations)
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
        assert not pod["spec"].get("nodeSelector")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env.items() >= expected.environment.items()
    assert env["HUBFORGE_PROFILE"] == expected.slug
    # The per-user home is always there, whatever the profile.
    assert {"name": "home", "mountPath": "/home/jovyan"} in container["volumeMounts"]
    assert {"name": "home", "persistentVolumeClaim": {"claimName": "claim-carol"}} in pod["spec"]["volumes"]


async def test_gpu_profile_gets_gpu_limit_node_selector_and_toleration():
    pod = await make_user_pod(PROFILES, {"profile": "gpu-1"}, *CAROL)
    assert _container(pod)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


async def test_the_schema_check_can_fail():
    pod = await make_user_pod(PROFILES, {}, *CAROL)
    _container(pod)["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


async def test_home_pvc_manifest_is_valid_and_per_user():
    pvc = await make_user_pvc(PROFILES, "carol", server_name="analysis")
    kubernetes_validate.validate(pvc, K8S_VERSION, strict=True)
    assert pvc["metadata"]["name"] == "claim-carol"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    spawner = offline_spawner(PROFILES, "carol")
    assert spawner.storage_pvc_ensure and not spawner.delete_pvc


async def test_named_servers_share_the_users_home():
    pod = await make_user_pod(PROFILES, {}, "carol", server_name="analysis")
    assert pod["metadata"]["name"] == "jupyter-carol--analysis"
    assert {"name": "home", "persistentVolumeClaim": {"claimName": "claim-carol"}} in pod["spec"]["volumes"]


@pytest.mark.parametrize(
    "user, groups, slugs",
    [
        ("bob", [], ["cpu-small", "cpu-large", "gpu-1"]),
        ("carol", ["power-users"], ["cpu-small", "cpu-large", "cpu-xlarge", "gpu-1"]),
    ],
)
def test_profile_list_is_filtered_per_user(user, groups, slugs):
    spawner = offline_spawner(PROFILES, user, groups)
    entries = spawner.profile_list(spawner)
    assert [e["slug"] for e in entries] == slugs
    assert [e["slug"] for e in entries if e["default"]] == ["cpu-small"]
    assert entries == to_kubespawner_profile_list(SHIPPED, user, groups)


def test_a_configured_static_profile_list_is_filtered_per_user_too():
    """Zero to JupyterHub sets c.KubeSpawner.profile_list from singleuser.profileList."""
    config = Config()
    config.KubeSpawner.profile_list = to_kubespawner_profile_list(SHIPPED)
    spawner = offline_spawner(PROFILES, "bob", [], config=config)
    assert spawner.profile_list(spawner) == to_kubespawner_profile_list(SHIPPED, "bob", [])
    config.KubeSpawner.profile_list = []  # the chart's default: none configured
    spawner = offline_spawner(PROFILES, "bob", [], config=config)
    assert spawner.profile_list is user_profile_list


async def test_a_profile_the_users_groups_do_not_allow_is_refused_with_400():
    with pytest.raises(HTTPError) as e:
        await make_user_pod(PROFILES, {"profile": "cpu-xlarge"}, "bob", [])
    assert e.value.status_code == 400
    assert "user_options['profile']" in e.value.log_message
    assert "cpu-xlarge" in e.value.log_message


@pytest.mark.parametrize(
    "options, field",
    [
        ({"profile": "cpu-small", "image": "1999.01"}, "image"),
        ({"profile": "gpu-1", "image--unlisted-choice": "evil/miner:latest"}, "image--unlisted-choice"),
        ({"profile": "cpu-small", "gpus": "8"}, "gpus"),
        ({"profile": "cpu-small", "size": ["mini"]}, "size"),
    ],
)
async def test_a_rest_spawn_with_a_bad_option_fails_with_400_naming_the_field(options, field):
    spawner = offline_spawner(PROFILES, "bob")
    spawner.user_options = options
    # What JupyterHub does for POST /users/bob/server: the hook, then start().
    await spawner._run_apply_user_options(options)
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    assert e.value.status_code == 400
    assert e.value.log_message.startswith(f"user_options[{field!r}]")
    assert spawner.api is None  # failed before anything could reach a cluster


async def test_hubforge_form_replaces_kubespawners():
    mro = HubForgeKubeSpawner.__mro__
    assert mro.index(ProfileSpawnerMixin) < mro.index(KubeSpawner)
    assert HubForgeKubeSpawner.options_from_form is ProfileSpawnerMixin.options_from_form
    spawner = offline_spawner(PROFILES, "bob")
    form = await spawner.get_options_form()
    assert 'id="hubforge-profiles"' in form
    assert "cpu-xlarge" not in form
    assert "kubespawner-profiles-list" not in form  # KubeSpawner's template
    formdata = {"profile": ["cpu-large"], "profile-option-cpu-large--size": ["high-memory"]}
    assert spawner.options_from_form(formdata) == {"profile": "cpu-large", "size": "high-memory"}
    with pytest.raises(ValueError, match="user_options\\['profile'\\]"):
        spawner.options_from_form({"profile": ["cpu-xlarge"]})


async def test_a_restart_on_another_profile_leaves_nothing_of_the_previous_one():
    """Overrides land on the spawner object, which JupyterHub keeps between starts."""
    config = Config()
    config.KubeSpawner.tolerations = [DEDICATED]
    team = {"groups": ["power-users"], "spawner_override": {"environment": {"TEAM": "power"}}}
    config.Spawner.group_overrides = {"team": team}
    spawner = offline_spawner(PROFILES, *CAROL, config=config)
    for options in ({"profile": "gpu-1"}, {"profile": "cpu-small"}):
        # JupyterHub's order for each start.
        spawner.user_options = options
        await spawner.apply_group_overrides()
        await spawner._run_apply_user_options(options)
        await spawner.load_user_options()
    assert spawner.image == "hubforge/cpu:2026.11"
    assert spawner.extra_resource_limits == {}
    assert spawner.node_selector == {}
    assert spawner.tolerations == [DEDICATED]
    assert spawner.environment == {"TEAM": "power", "OMP_NUM_THREADS": "1"}  # group, then profile


async def test_profile_volumes_and_tolerations_add_to_the_configured_ones(tmp_path):
    (tmp_path / "profiles.yaml").write_text(textwrap.dedent("""\
        profiles:
          - slug: data
            display_name: Data
            image: hubforge/gpu:2026.11
            cpu: {guarantee: 1, limit: 2}
            memory: {guarantee: 1G, limit: 2G}
            gpu:
              count: 1
              tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
            volumes:
              - {name: shared, mount_path: /home/jovyan/shared, claim_name: shared-data, read_only: true}
        """))
    config = Config()
    config.KubeSpawner.tolerations = [DEDICATED]
    pod = await make_user_pod([tmp_path], {}, "dana", config=config)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["home", "shared"]
    assert [m["mountPath"] for m in _container(pod)["volumeMounts"]] == ["/home/jovyan", "/home/jovyan/shared"]
    assert pod["spec"]["tolerations"][0] == DEDICATED
    assert len(pod["spec"]["tolerations"]) == 2


async def test_state_keeps_the_resolved_profile():
    spawner = offline_spawner(PROFILES, *CAROL)
    spawner.user_options = {"profile": "gpu-1", "image": "2026.08"}
    await spawner._run_apply_user_options(spawner.user_options)
    await spawner.load_user_options()
    state = spawner.get_state()
    restored = offline_spawner(PROFILES, *CAROL)
    restored.load_state(state)
    assert restored.resolved == spawner.resolved
    assert restored.resolved.image == "hubforge/gpu:2026.08"
