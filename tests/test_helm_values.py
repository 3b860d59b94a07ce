"""The generated Helm values: fresh, valid the way Helm validates them, and usable.

Helm deep-merges a values file over the chart's own ``values.yaml`` (maps merge, lists
and scalars replace, ``null`` deletes) and validates the result against the chart's
``values.schema.json``; these tests do the same with the chart files kept in
``../shared/schemas`` (Zero to JupyterHub 4.4.0, dask-gateway 2026.3.0). They then
apply the jupyterhub values the way the chart's ``jupyterhub_config.py`` does and build
real pods from them, and run the dask-gateway values' code the way the gateway pod does,
against dask-gateway-server's classes, to check the ``dask:`` limits it enforces.

The jobs service's part (``helm-values/jobs-rbac.yaml`` and the jupyterhub values'
port, network policies and ``hub.extraConfig`` entry) is checked as Kubernetes would
use it: the Service and NetworkPolicy objects the chart renders from those values, and
the Role, are validated against the Kubernetes schema, and the Role is checked against
the API requests the jobs service's Kubernetes executor really makes. The models
service's part (``helm-values/models-rbac.yaml``, port 10103, the hub's way out to model
worker pods on 8080) is checked the same way, against its Kubernetes backend and the
worker pods' own NetworkPolicy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from tornado.web import HTTPError
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from hubforge.helm import CHARTS, dask_gateway_values, generate, jupyterhub_values, stale_files
from hubforge.exceptions import SettingsError
from hubforge.helm.cli import register
from hubforge.helm.jobs import JOBS_RBAC_FILE, jobs_chart_values
from hubforge.helm.models import MODELS_RBAC_FILE, models_chart_values
from hubforge.helm.values import HUB_PROFILES_DIR, profile_files
from hubforge.jobs.service import READ_SCOPE, WRITE_SCOPE
from hubforge.k8s import make_user_pod
from hubforge.k8s.jobs import make_run_job
from hubforge.k8s.models import make_model_deployment, make_model_network_policy
from hubforge.models import service as models_service
from hubforge.settings import DEFAULT_SETTINGS_FILE, Settings
from hubforge.spawners.kubernetes import HubForgeKubeSpawner

ROOT = Path(__file__).resolve().parent.parent
HELM_VALUES = ROOT / "helm-values"
#: Chart folder under shared/schemas for each generated file.
SCHEMA_DIRS = {"jupyterhub.yaml": "z2jh", "dask-gateway.yaml": "dask-gateway"}
#: A Kubernetes release kubernetes-validate ships schemas for.
K8S_VERSION = "1.33"
#: The labels Zero to JupyterHub 4.4 gives the hub's pod, and a user server's.
HUB_POD_LABELS = {"app": "jupyterhub", "component": "hub", "release": "hub",
                  "app.kubernetes.io/name": "jupyterhub", "app.kubernetes.io/instance": "hub",
                  "app.kubernetes.io/component": "hub", "hub.jupyter.org/network-access-proxy-api": "true"}
PROXY_POD_LABELS = {"app": "jupyterhub", "component": "proxy", "release": "hub",
                    "app.kubernetes.io/name": "jupyterhub", "app.kubernetes.io/component": "proxy",
                    "hub.jupyter.org/network-access-hub": "true", "hub.jupyter.org/network-access-singleuser": "true"}


@pytest.fixture(scope="module")
def settings():
    return Settings.load(DEFAULT_SETTINGS_FILE)


@pytest.fixture(scope="module")
def schemas():
    """The charts' defaults and schemas: ../shared/schemas beside the checkout."""
    path = ROOT.parent / "shared" / "schemas"
    if not path.is_dir():
        pytest.skip(f"chart schemas not found at {path} (see shared/schemas/README.md)")
    return path


def helm_merge(defaults, values):
    """Helm's coalescing of a values file over chart defaults."""
    if not (isinstance(defaults, dict) and isinstance(values, dict)):
        return values
    merged = dict(defaults)
    for key, value in values.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = helm_merge(defaults.get(key), value)
    return merged


def schema_errors(schemas: Path, name: str, values: dict) -> list[str]:
    chart = schemas / SCHEMA_DIRS[name]
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    schema = yaml.safe_load((chart / "values.schema.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    merged = helm_merge(defaults, values)
    errors = jsonschema.Draft7Validator(schema).iter_errors(merged)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def checked_in(name: str) -> dict:
    return yaml.safe_load((HELM_VALUES / name).read_text())


def test_checked_in_values_are_fresh(settings):
    stale = stale_files(settings, HELM_VALUES)
    assert not stale, (
        f"stale generated files: {', '.join(map(str, stale))}; "
        "run `hubforge helm-values` and commit helm-values/"
    )


def test_generated_files_say_so(settings):
    files = generate(settings)
    assert sorted(files) == sorted([*CHARTS, JOBS_RBAC_FILE, MODELS_RBAC_FILE])
    for name, text in files.items():
        assert text.startswith("# generated by hubforge helm-values; do not edit"), name
        assert all(yaml.safe_load_all(text)), name


@pytest.mark.parametrize("name", list(CHARTS))
def test_values_pass_the_charts_schema_after_merging_over_its_defaults(schemas, name):
    assert schema_errors(schemas, name, checked_in(name)) == []


@pytest.mark.parametrize(
    "name, broken, where",
    [
        ("jupyterhub.yaml", {"singleuser": {"profileList": "x"}}, "singleuser.profileList"),
        ("jupyterhub.yaml", {"cull": {"timeout": "soon"}}, "cull.timeout"),
        ("jupyterhub.yaml", {"prePuller": {"extraImages": {"a": {"name": "img"}}}}, "prePuller.extraImages.a"),
        # The jobs service's keys are the chart's: a misspelt one or a wrong type fails.
        ("jupyterhub.yaml", {"hub": {"service": {"extraPort": []}}}, "hub.service"),
        ("jupyterhub.yaml", {"hub": {"service": {"extraPorts": {"name": "jobs"}}}}, "hub.service.extraPorts"),
        ("jupyterhub.yaml", {"hub": {"networkPolicy": {"ingress": {"ports": []}}}}, "hub.networkPolicy.ingress"),
        ("jupyterhub.yaml", {"singleuser": {"networkPolicy": {"egres": []}}}, "singleuser.networkPolicy"),
        ("jupyterhub.yaml", {"proxy": {"chp": {"networkPolicy": {"egress": "hub"}}}}, "proxy.chp.networkPolicy.egress"),
        ("dask-gateway.yaml", {"gateway": {"auth": {"type": "password"}}}, "gateway.auth.type"),
        ("dask-gateway.yaml", {"gateway": {"backend": {"worker": {"threads": "four"}}}},
         "gateway.backend.worker.threads"),
    ],
)
def test_the_schema_check_rejects_a_broken_value(schemas, name, broken, where):
    errors = schema_errors(schemas, name, helm_merge(checked_in(name), broken))
    assert errors and all(e.startswith(where) for e in errors), errors


def test_profile_list_and_images_come_from_the_profiles(settings):
    values = checked_in("jupyterhub.yaml")
    assert [p["slug"] for p in values["singleuser"]["profileList"]] == ["cpu-small", "cpu-large", "cpu-xlarge", "gpu-1"]
    images = {f"{i['name']}:{i['tag']}" for i in values["prePuller"]["extraImages"].values()}
    assert images == {"hubforge/cpu:2026.11", "hubforge/cpu:2026.08", "hubforge/gpu:2026.11", "hubforge/gpu:2026.08"}
    files = values["hub"]["extraFiles"]
    assert [f["stringData"] for f in files.values()] == [p.read_text() for p in profile_files(settings)]
    assert all(f["mountPath"].startswith(HUB_PROFILES_DIR + "/") for f in files.values())
    assert values["cull"] == {"enabled": True, "timeout": 3600, "every": 1800}
    assert values["hub"]["config"]["Authenticator"] == {"admin_users": ["admin"], "allow_all": True}


def test_settings_drive_the_values(settings):
    changed = Settings.load(DEFAULT_SETTINGS_FILE)
    changed.idle_timeout = 0
    changed.admin_users = ["root", "alice"]
    changed.named_server_limit = 2
    values = jupyterhub_values(changed)
    assert values["cull"] == {"enabled": False}
    assert values["hub"]["config"]["Authenticator"]["admin_users"] == ["alice", "root"]
    assert values["hub"]["namedServerLimitPerUser"] == 2


def chart_config(values: dict, profiles_dir: Path) -> Config:
    """What Zero to JupyterHub 4.4's jupyterhub_config.py makes of the keys we set.

    The chart mounts ``hub.extraFiles`` at their ``mountPath`` (``HUB_PROFILES_DIR``);
    here they are written to `profiles_dir` first, and ``hub.extraConfig`` finds them
    there: the models service reads them as the hub starts (its workers' default image).
    """
    c = Config()
    singleuser = values["singleuser"]
    storage, dynamic = singleuser["storage"], singleuser["storage"]["dynamic"]
    c.KubeSpawner.profile_list = singleuser["profileList"]
    c.KubeSpawner.environment = singleuser["extraEnv"]
    c.KubeSpawner.start_timeout = singleuser["startTimeout"]
    c.Spawner.default_url = singleuser["defaultUrl"]
    c.KubeSpawner.pvc_name_template = dynamic["pvcNameTemplate"]
    c.KubeSpawner.storage_pvc_ensure = True
    c.KubeSpawner.storage_capacity = storage["capacity"]
    c.KubeSpawner.storage_access_modes = dynamic["storageAccessModes"]
    c.KubeSpawner.volumes = [
        {"name": dynamic["volumeNameTemplate"], "persistentVolumeClaim": {"claimName": "{pvc_name}"}}
    ]
    c.KubeSpawner.volume_mounts = [{"mountPath": storage["homeMountPath"], "name": dynamic["volumeNameTemplate"]}]
    c.KubeSpawner.tolerations = [
        {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}
    ]
    # The chart's default singleuser.extraLabels: servers may reach the hub's pod.
    c.KubeSpawner.extra_labels = singleuser.get("extraLabels", {"hub.jupyter.org/network-access-hub": "true"})
    c.JupyterHub.base_url = values["hub"].get("baseUrl", "/")
    # The chart starts both lists, adds its culler, then hub.services and hub.loadRoles
    # (dicts there, named by their keys), before hub.config and hub.extraConfig.
    c.JupyterHub.services = []
    c.JupyterHub.load_roles = []
    for name, service in values["hub"].get("services", {}).items():
        c.JupyterHub.services.append({"name": name, **service, "api_token": "from-the-hub-secret"})
    for name, role in values["hub"].get("loadRoles", {}).items():
        c.JupyterHub.load_roles.append({"name": name, **role})
    for cls, traits in values["hub"]["config"].items():
        c[cls].update(traits)
    for extra in values["hub"]["extraFiles"].values():
        (profiles_dir / Path(extra["mountPath"]).name).write_text(extra["stringData"])
    for key, code in sorted(values["hub"]["extraConfig"].items()):
        code = code.replace(HUB_PROFILES_DIR, str(profiles_dir))
        exec(compile(code, f"hub.extraConfig.{key}", "exec"), {"c": c})
    return c


async def test_the_hub_config_from_the_values_spawns_valid_pods(tmp_path):
    values = checked_in("jupyterhub.yaml")
    config = chart_config(values, tmp_path)
    assert import_item(config.JupyterHub.spawner_class) is HubForgeKubeSpawner
    assert config.HubForgeKubeSpawner.profile_paths == [str(tmp_path)]  # HUB_PROFILES_DIR in the pod
    assert Path(config.JupyterHub.template_paths[0], "signup.html").is_file()

    pod = await make_user_pod([tmp_path], {"profile": "gpu-1"}, "carol", ["power-users"], config=config)
    kubernetes_validate.validate(pod, "1.33", strict=True)
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "hubforge/gpu:2026.11"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub" and env["OMP_NUM_THREADS"] == "8"
    assert {"name": "home", "persistentVolumeClaim": {"claimName": "claim-carol"}} in pod["spec"]["volumes"]
    assert len(pod["spec"]["tolerations"]) == 2  # the chart's dedicated-node one and the GPU one

    with pytest.raises(HTTPError) as e:
        await make_user_pod([tmp_path], {"profile": "cpu-xlarge"}, "bob", [], config=config)
    assert e.value.status_code == 400


def test_dask_gateway_values_talk_to_this_hub(settings):
    hub = checked_in("jupyterhub.yaml")
    gateway = checked_in("dask-gateway.yaml")["gateway"]
    assert gateway["auth"]["type"] == "jupyterhub"
    assert gateway["auth"]["jupyterhub"]["apiUrl"] == "http://hub:8081/hub/api"
    service = gateway["auth"]["jupyterhub"]["jupyterhubServiceName"]
    assert service in hub["hub"]["services"]
    assert hub["singleuser"]["extraEnv"]["DASK_GATEWAY__ADDRESS"].endswith(gateway["prefix"])
    assert gateway["backend"]["image"] == {"name": "hubforge/cpu", "tag": "2026.11"}
    assert gateway["backend"]["worker"]["memory"]["limit"] == 2 * 1024**3
    compile(gateway["extraConfig"]["hubforge"], "gateway.extraConfig", "exec")


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hubforge")
    parser.add_argument("--settings")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["--settings", str(DEFAULT_SETTINGS_FILE), *argv])
    return args.func(args)


def test_cli_writes_and_checks(tmp_path, capsys):
    assert run_cli("helm-values", "--check", "--output-dir", str(tmp_path)) == 1
    out = capsys.readouterr()
    assert f"stale: {tmp_path / 'jupyterhub.yaml'}" in out.out and "run: hubforge helm-values" in out.err
    assert run_cli("helm-values", "--output-dir", str(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*CHARTS, JOBS_RBAC_FILE, MODELS_RBAC_FILE])
    assert run_cli("helm-values", "--check", "--output-dir", str(tmp_path)) == 0
    (tmp_path / "dask-gateway.yaml").write_text("# edited\n")
    assert run_cli("helm-values", "--check", "--output-dir", str(tmp_path)) == 1
    assert "dask-gateway.yaml" in capsys.readouterr().out
    assert run_cli("helm-values", "--output-dir", str(tmp_path)) == 0
    (tmp_path / JOBS_RBAC_FILE).unlink()
    (tmp_path / MODELS_RBAC_FILE).unlink()
    assert run_cli("helm-values", "--check", "--output-dir", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert f"stale: {tmp_path / JOBS_RBAC_FILE}" in out and f"stale: {tmp_path / MODELS_RBAC_FILE}" in out


# --- the jobs service on Kubernetes ---------------------------------------------------------
#
# The service runs in the hub's pod (hub.extraConfig adds it), listens on 10102, and makes
# a Job and a Secret per run; run pods, user servers and the proxy reach it through the
# hub's Service and past the chart's network policies, which the values extend.

HOSTILE_BASE_URL = "/@/space%20word/"


@pytest.fixture
def hub_pod_env(monkeypatch):
    """The hub pod's environment, as the chart and Kubernetes set it."""
    monkeypatch.setenv("POD_NAMESPACE", "hubforge")
    monkeypatch.setenv("POD_IP", "10.42.0.17")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "proxy-token-not-for-services")
    monkeypatch.delenv("HUBFORGE_JOBS_DB_URL", raising=False)
    monkeypatch.delenv("HUBFORGE_MODELS_DB_URL", raising=False)


def jobs_service(config: Config) -> dict:
    (service,) = [s for s in config.JupyterHub.services if s["name"] == "jobs"]
    return service


def test_the_hub_runs_the_jobs_service_in_its_pod(hub_pod_env, tmp_path):
    values = helm_merge(checked_in("jupyterhub.yaml"), {"hub": {"baseUrl": HOSTILE_BASE_URL}})
    config = chart_config(values, tmp_path)
    service = jobs_service(config)
    env = service["environment"]
    # The hub (and through it the proxy and notebooks) reach it at the pod's IP; it listens
    # on every interface of the pod, at the port the hub's Service forwards.
    (port,) = [p for p in values["hub"]["service"]["extraPorts"] if p["name"] == "jobs"]
    assert service["url"] == f"http://10.42.0.17:{port['targetPort']}"
    assert env["HUBFORGE_JOBS_BIND"] == f"0.0.0.0:{port['targetPort']}"
    assert service["command"][1:] == ["-m", "hubforge.jobs"]

    settings = json.loads(env["HUBFORGE_JOBS_CONFIG"])
    assert settings["mode"] == "kubernetes"
    spawner = settings["kubernetes"].pop("spawner_config")
    assert settings["kubernetes"] == {
        "namespace": "hubforge",
        "service_url": f"http://hub:{port['port']}/@/space%20word/services/jobs/",
    }
    # The chart's spawner settings reach runs' pods; callables (hooks) are left out.
    assert {"tolerations", "environment", "storage_capacity"} <= set(spawner["KubeSpawner"])
    assert "profile_list" not in spawner["KubeSpawner"]  # runs take the profile from HubForge's files
    assert all(not callable(v) for section in spawner.values() for v in section.values())
    assert settings["profiles"] == [str(tmp_path)]  # HUB_PROFILES_DIR in the pod (see chart_config)
    assert settings["jobs_dir"] == "/srv/jupyterhub/jobs"  # the hub's PVC
    # In-cluster API credentials reach the service; the hub's own secrets do not.
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert "proxy-token-not-for-services" not in json.dumps(service)
    assert "HUBFORGE_JOBS_DB_URL" not in env

    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    assert set(roles["user"]["scopes"]) >= {"self", "access:services!service=dask-gateway", READ_SCOPE,
                                             WRITE_SCOPE, "access:services!service=jobs"}
    assert {READ_SCOPE, WRITE_SCOPE, "read:services!service=jobs"} <= set(roles["server"]["scopes"])
    assert {READ_SCOPE, WRITE_SCOPE} <= set(config.JupyterHub.custom_scopes)
    assert [s["name"] for s in config.JupyterHub.services] == ["dask-gateway", "jobs", "models"]


def test_the_executor_takes_the_kubernetes_section(hub_pod_env, tmp_path):
    from hubforge.jobs.kubernetes import KubernetesExecutor

    settings = json.loads(jobs_service(chart_config(checked_in("jupyterhub.yaml"), tmp_path))
                          ["environment"]["HUBFORGE_JOBS_CONFIG"])
    executor = KubernetesExecutor(tmp_path / "jobs", profile_paths=settings["profiles"], **settings["kubernetes"])
    assert (executor.namespace, executor.service_url) == ("hubforge", "http://hub:10102/services/jobs/")


def test_the_jobs_database_url_comes_from_the_hubs_environment(hub_pod_env, monkeypatch, tmp_path):
    # A site keeps the password in a Secret: hub.extraEnv.HUBFORGE_JOBS_DB_URL.secretKeyRef.
    monkeypatch.setenv("HUBFORGE_JOBS_DB_URL", "postgresql://jobs:pw@db/jobs")
    env = jobs_service(chart_config(checked_in("jupyterhub.yaml"), tmp_path))["environment"]
    assert env["HUBFORGE_JOBS_DB_URL"] == "postgresql://jobs:pw@db/jobs"
    assert "pw@db" not in env["HUBFORGE_JOBS_CONFIG"]


def test_jobs_settings_reach_the_hub_pod_and_bad_ones_fail_here(tmp_path, hub_pod_env):
    changed = Settings.load(DEFAULT_SETTINGS_FILE)
    changed.jobs = {"max_concurrent_runs_per_user": 4}
    values = jupyterhub_values(changed)
    env = jobs_service(chart_config(values, tmp_path))["environment"]
    assert json.loads(env["HUBFORGE_JOBS_CONFIG"])["settings"]["max_concurrent_runs_per_user"] == 4

    changed.jobs = {"max_concurrent_run": 4}
    with pytest.raises(SettingsError, match=r"jobs\.max_concurrent_run: unknown setting"):
        jupyterhub_values(changed)


def test_jobs_disabled_leaves_no_service_port_policy_or_rights(schemas, tmp_path, hub_pod_env):
    disabled = Settings.load(DEFAULT_SETTINGS_FILE)
    disabled.jobs = {"enabled": False}
    assert jobs_chart_values(disabled, HUB_PROFILES_DIR, "x") == {}
    values = jupyterhub_values(disabled)
    assert "hubforge-jobs.py" not in values["hub"]["extraConfig"]
    assert "10102" not in json.dumps(values) and "hubforge.jobs/run" not in json.dumps(values)
    # What is left is the models service's alone.
    assert values["hub"]["service"]["extraPorts"] == [{"name": "models", "port": 10103, "targetPort": 10103,
                                                       "protocol": "TCP"}]
    assert schema_errors(schemas, "jupyterhub.yaml", values) == []
    assert [s["name"] for s in chart_config(values, tmp_path).JupyterHub.services] == ["dask-gateway", "models"]
    text = generate(disabled)[JOBS_RBAC_FILE]
    assert "jobs.enabled is false" in text and "kubectl delete" in text
    assert not any(yaml.safe_load_all(text))


def test_jobs_and_models_disabled_leave_the_chart_alone(schemas, tmp_path, hub_pod_env):
    disabled = Settings.load(DEFAULT_SETTINGS_FILE)
    disabled.jobs = {"enabled": False}
    disabled.models = {"enabled": False}
    values = jupyterhub_values(disabled)
    assert sorted(values["hub"]["extraConfig"]) == ["hubforge.py"]
    assert not {"service", "networkPolicy", "extraEnv"} & set(values["hub"])
    assert "networkPolicy" not in values["singleuser"] and "proxy" not in values
    assert schema_errors(schemas, "jupyterhub.yaml", values) == []
    assert [s["name"] for s in chart_config(values, tmp_path).JupyterHub.services] == ["dask-gateway"]


# Network: the objects the chart renders from the values, and who they let in.


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector selects a pod with `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"Exists": key in labels, "DoesNotExist": key not in labels,
              "In": labels.get(key) in values, "NotIn": key not in labels or labels[key] not in values}[op]
        if not ok:
            return False
    return True


def admitted(rules: list[dict], labels: dict, port: int) -> bool:
    """Whether NetworkPolicy `rules` (ingress ``from`` or egress ``to``) admit a pod on `port`."""
    for rule in rules:
        peers = rule.get("from", rule.get("to", []))
        ports = [p["port"] for p in rule.get("ports", [])]
        if port in ports and any("podSelector" in peer and selects(peer["podSelector"], labels) for peer in peers):
            return True
    return False


def hub_service(values: dict) -> dict:
    """The hub's Service as the chart's hub/service.yaml renders it."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hub", "labels": {"component": "hub"}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"component": "hub", "release": "hub"},
            "ports": [{"name": "hub", "port": 8081, "targetPort": "http"}, *values["hub"]["service"]["extraPorts"]],
        },
    }


def network_policy(name: str, pod_labels: dict, ingress: list, egress: list) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {"podSelector": {"matchLabels": pod_labels}, "policyTypes": ["Ingress", "Egress"],
                 "ingress": ingress, "egress": egress},
    }


async def run_pod_labels() -> dict:
    job = await make_run_job([ROOT / "spawner_profiles"], {"profile": "cpu-small"}, "carol", run_id=7,
                             job_name="nightly", service_url="http://hub:10102/services/jobs/", timeout=60)
    return job["spec"]["template"]["metadata"]["labels"]


def test_the_hubs_service_forwards_the_jobs_and_models_ports():
    values = checked_in("jupyterhub.yaml")
    service = hub_service(values)
    kubernetes_validate.validate(service, K8S_VERSION, strict=True)
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("hub", 8081, "http"), ("jobs", 10102, 10102), ("models", 10103, 10103)}
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(helm_merge(service, {"spec": {"ports": [{"port": "10102x"}]}}),
                                     K8S_VERSION, strict=True)


async def test_the_jobs_port_admits_runs_servers_and_the_proxy_only(tmp_path):
    values = checked_in("jupyterhub.yaml")
    ingress = values["hub"]["networkPolicy"]["ingress"]
    policy = network_policy("hub", {"component": "hub"}, ingress, [])
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)

    server = await make_user_pod([ROOT / "spawner_profiles"], {"profile": "cpu-small"}, "carol",
                                 config=chart_config(values, tmp_path))
    server_labels = server["metadata"]["labels"]
    runs = await run_pod_labels()
    assert admitted(ingress, runs, 10102)
    assert admitted(ingress, server_labels, 10102)
    assert admitted(ingress, PROXY_POD_LABELS, 10102)
    assert admitted(ingress, HUB_POD_LABELS, 10102)
    # Nothing else: not a pod HubForge did not label as a run, not the hub's API port.
    assert not admitted(ingress, {"app.kubernetes.io/managed-by": "hubforge"}, 10102)
    assert not admitted(ingress, {"app": "dask-gateway", "component": "traefik"}, 10102)
    assert not admitted(ingress, runs, 8081)
    # Runs are not user servers: the chart's singleuser policies do not select them.
    assert not selects({"matchLabels": {"component": "singleuser-server"}}, runs)


def test_servers_and_the_proxy_may_reach_the_jobs_port():
    values = checked_in("jupyterhub.yaml")
    for who, egress in (("singleuser", values["singleuser"]["networkPolicy"]["egress"]),
                        ("proxy", values["proxy"]["chp"]["networkPolicy"]["egress"])):
        kubernetes_validate.validate(network_policy(who, {"component": who}, [], egress), K8S_VERSION, strict=True)
        assert admitted(egress, HUB_POD_LABELS, 10102), who
        assert not admitted(egress, HUB_POD_LABELS, 8081), who  # the chart's own rule covers that
        assert not admitted(egress, PROXY_POD_LABELS, 10102), who


# RBAC: helm-values/jobs-rbac.yaml.


def rbac_documents(name: str = JOBS_RBAC_FILE) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((HELM_VALUES / name).read_text()) if doc]


#: What the jobs service may do, and nothing more: (API group, resource) -> verbs.
JOBS_RIGHTS = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
    ("", "secrets"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"get", "list"},
    ("", "pods/log"): {"get"},
}


def granted(role: dict) -> dict[tuple[str, str], set[str]]:
    rights: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rights[(group, resource)] |= set(rule["verbs"])
    return dict(rights)


def test_jobs_rbac_is_valid_namespaced_and_least_privilege():
    role, binding = rbac_documents()
    for doc in (role, binding):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert "namespace" not in doc["metadata"]  # kubectl apply --namespace <the hub's>
    assert (role["kind"], binding["kind"]) == ("Role", "RoleBinding")
    assert granted(role) == JOBS_RIGHTS
    assert "*" not in json.dumps(role["rules"])
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub"}]  # z2jh's hub account
    broken = helm_merge(role, {"rules": [{"apiGroups": [""], "resources": ["pods"], "verb": ["get"]}]})
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def api_request(method: str, url: str) -> tuple[str, tuple[str, str], str]:
    """``(namespace, (API group, resource), verb)`` of a Kubernetes API request, as RBAC sees it."""
    parts = urlsplit(url)
    path = parts.path.strip("/").split("/")
    group, rest = ("", path[2:]) if path[0] == "api" else (path[1], path[3:])
    assert rest[0] == "namespaces", f"a request outside a namespace: {method} {url}"
    namespace, resource, name, sub = rest[1], rest[2], rest[3] if len(rest) > 3 else None, rest[4:]
    if sub:
        resource += "/" + "/".join(sub)
    if method == "GET":
        verb = "get" if name else ("watch" if parse_qs(parts.query).get("watch") == ["true"] else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return namespace, (group, resource), verb


class Response:
    """What kubernetes_asyncio's REST client returns."""

    def __init__(self, body, status=200):
        self.status, self.reason = status, "OK"
        self.data = body if isinstance(body, bytes) else json.dumps(body).encode()

    def getheaders(self):
        return {"content-type": "application/json"}

    def getheader(self, name, default=None):
        return self.getheaders().get(name.lower(), default)


def recording_api_client():
    """A kubernetes_asyncio ApiClient that answers like a cluster where every run's pod
    fails, and remembers each request as RBAC sees it."""
    from kubernetes_asyncio.client import ApiClient, Configuration

    class RecordingApiClient(ApiClient):
        def __init__(self):
            configuration = Configuration()
            configuration.host = "https://10.96.0.1:443"
            super().__init__(configuration)
            self.requests = []

        async def request(self, method, url, query_params=None, headers=None, post_params=None, body=None,
                          _preload_content=True, _request_timeout=None):
            if query_params:
                url += "?" + "&".join(f"{k}={v}" for k, v in query_params)
            namespace, resource, verb = api_request(method, url)
            self.requests.append((namespace, resource, verb))
            if verb == "create":
                return Response({**body, "metadata": {**body["metadata"], "uid": "uid-1"}}, 201)
            if resource == ("", "pods/log"):
                return Response(b"the run's pod log\n")
            if resource == ("", "pods"):
                return Response({"items": [{"metadata": {"name": "hubforge-run-7-x1"}}]})
            if resource == ("batch", "jobs") and verb == "list":
                return Response({"items": [{"metadata": {"name": "hubforge-run-3"}, "status": {}}]})
            if resource == ("batch", "jobs") and verb == "get":
                return Response({"metadata": {"name": "hubforge-run-7"}, "status": {"failed": 1}})
            return Response({"kind": "Status", "status": "Success"})

    return RecordingApiClient()


async def test_jobs_rbac_covers_what_the_executor_does(monkeypatch, tmp_path):
    """Every request of a run's life (create, watch it fail, keep its log, delete) and of
    the start-up sweep is granted by the Role, in the hub's namespace, and nothing more."""
    from hubforge.jobs import kubernetes
    from hubforge.profiles.resolve import ResolvedProfile

    monkeypatch.setattr(kubernetes, "WATCH_SECONDS", 0)
    api = recording_api_client()
    executor = kubernetes.KubernetesExecutor(tmp_path, namespace="hubforge", api=api,
                                             profile_paths=[str(ROOT / "spawner_profiles")],
                                             service_url="http://hub:10102/services/jobs/")
    try:
        slot = await executor.start_slot("carol", ResolvedProfile(slug="cpu-small", display_name="CPU"), "python3")
        notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        await slot.send({"command": "run", "run_id": 7, "notebook": notebook, "parameters": {}, "env": {},
                         "input_path": "nightly.ipynb", "timeout": 60})
        assert await asyncio.wait_for(slot.receive(), 10) is None  # the Job failed without reporting
        await slot.kill()
        await executor.sweep()
    finally:
        await api.close()
    assert "the run's pod log" in slot.log_path.read_text()

    role, _ = rbac_documents()
    rights = granted(role)
    assert {namespace for namespace, _, _ in api.requests} == {"hubforge"}
    used = defaultdict(set)
    for _, resource, verb in api.requests:
        used[resource].add(verb)
        assert verb in rights.get(resource, set()), f"the Role does not grant {verb} {resource}"
    # Each kind of object the Role names is used (not each verb: watch, and reading Secrets,
    # are granted for an executor that follows Jobs instead of polling them).
    assert set(used) == set(rights)


# --- the models service on Kubernetes -------------------------------------------------------
#
# The service runs in the hub's pod (hub.extraConfig adds it), listens on 10103, and serves
# each published version with five objects in the hub's namespace; worker pods fetch their
# model from it through the hub's Service, and it connects to their Services on 8080.

MODELS_SCOPES = {models_service.READ_SCOPE, models_service.WRITE_SCOPE, models_service.INVOKE_SCOPE}


def models_service_of(config: Config) -> dict:
    (service,) = [s for s in config.JupyterHub.services if s["name"] == "models"]
    return service


def with_models(models: dict) -> Settings:
    changed = Settings.load(DEFAULT_SETTINGS_FILE)
    changed.models = models
    return changed


def worker_pod_labels() -> dict:
    """The labels of a model worker's pods, as the backend starts them (with a revision)."""
    deployment = make_model_deployment(model="churn", version=3, owner="carol", namespace="hubforge",
                                       image="hubforge/cpu:2026.11", revision="1a2b3c4d",
                                       fetch_url="http://hub:10103/services/models/internal/archive")
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_the_hub_runs_the_models_service_in_its_pod(hub_pod_env, tmp_path):
    values = helm_merge(checked_in("jupyterhub.yaml"), {"hub": {"baseUrl": HOSTILE_BASE_URL}})
    config = chart_config(values, tmp_path)
    service = models_service_of(config)
    env = service["environment"]
    (port,) = [p for p in values["hub"]["service"]["extraPorts"] if p["name"] == "models"]
    # The hub, the proxy and notebooks reach it at the pod's IP; it listens on every
    # interface of the pod, at the port the hub's Service forwards.
    assert service["url"] == f"http://10.42.0.17:{port['targetPort']}"
    assert env["HUBFORGE_MODELS_BIND"] == f"0.0.0.0:{port['targetPort']}"
    assert service["command"][1:] == ["-m", "hubforge.models"]

    settings = json.loads(env["HUBFORGE_MODELS_CONFIG"])
    assert settings["mode"] == "kubernetes"
    # Workers default to the first CPU profile's image, read from the mounted profile files.
    assert settings["kubernetes"] == {"namespace": "hubforge", "image": "hubforge/cpu:2026.11", "max_replicas": 4}
    # Workers fetch through the hub's Service, under the hub's base URL.
    assert settings["fetch_url"] == f"http://hub:{port['port']}/@/space%20word/services/models/"
    assert settings["models_dir"] == "/srv/jupyterhub/models"  # the hub's PVC
    assert settings["public_url"] == ""  # the chart's ingress decides the hub's address
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert "proxy-token-not-for-services" not in json.dumps(service)
    assert "HUBFORGE_MODELS_DB_URL" not in env

    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    assert MODELS_SCOPES | {"self", "access:services!service=models"} <= set(roles["user"]["scopes"])
    assert MODELS_SCOPES | {"read:services!service=models"} <= set(roles["server"]["scopes"])
    assert MODELS_SCOPES <= set(config.JupyterHub.custom_scopes)
    # The jobs service's entry is unchanged beside it.
    assert {READ_SCOPE, WRITE_SCOPE, "access:services!service=jobs"} <= set(roles["user"]["scopes"])


def test_the_models_backend_takes_the_kubernetes_section(hub_pod_env, tmp_path):
    from hubforge.models.kubernetes import KubernetesBackend
    from hubforge.models.settings import ModelsSettings

    config = json.loads(models_service_of(chart_config(checked_in("jupyterhub.yaml"), tmp_path))
                        ["environment"]["HUBFORGE_MODELS_CONFIG"])
    backend = models_service.make_backend(config, ModelsSettings(**config["settings"]), tmp_path)
    assert isinstance(backend, KubernetesBackend)
    assert (backend.namespace, backend.image, backend.max_replicas) == ("hubforge", "hubforge/cpu:2026.11", 4)
    assert config["fetch_url"] + "internal/archive" == "http://hub:10103/services/models/internal/archive"


def test_the_models_database_url_comes_from_the_hubs_environment(hub_pod_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HUBFORGE_MODELS_DB_URL", "postgresql://models:pw@db/models")
    env = models_service_of(chart_config(checked_in("jupyterhub.yaml"), tmp_path))["environment"]
    assert env["HUBFORGE_MODELS_DB_URL"] == "postgresql://models:pw@db/models"
    assert "pw@db" not in env["HUBFORGE_MODELS_CONFIG"]


def test_models_settings_reach_the_hub_pod_and_bad_ones_fail_here(tmp_path, hub_pod_env):
    # enabled: true written out is a Python True in the code, not JSON's true.
    changed = with_models({"enabled": True, "max_batch_size": 32, "invoke_scopes": ["churn"],
                           "container_image": "registry.example.org/models:1"})
    values = jupyterhub_values(changed)
    compile(values["hub"]["extraConfig"]["hubforge-models.py"], "hub.extraConfig.hubforge-models.py", "exec")
    config = chart_config(values, tmp_path)
    settings = json.loads(models_service_of(config)["environment"]["HUBFORGE_MODELS_CONFIG"])
    assert settings["settings"]["max_batch_size"] == 32
    assert settings["kubernetes"]["image"] == "registry.example.org/models:1"
    assert f"{models_service.INVOKE_SCOPE}:churn" in config.JupyterHub.custom_scopes

    with pytest.raises(SettingsError, match=r"models\.max_batch: unknown setting"):
        jupyterhub_values(with_models({"max_batch": 32}))
    with pytest.raises(SettingsError, match=r"models\.sample_rate"):
        jupyterhub_values(with_models({"sample_rate": 2}))


def test_models_disabled_leaves_no_service_port_policy_or_rights(schemas, tmp_path, hub_pod_env):
    disabled = with_models({"enabled": False})
    assert models_chart_values(disabled, HUB_PROFILES_DIR, "x") == {}
    values = jupyterhub_values(disabled)
    assert "hubforge-models.py" not in values["hub"]["extraConfig"]
    assert "10103" not in json.dumps(values) and "hubforge-model" not in json.dumps(values)
    assert "egress" not in values["hub"]["networkPolicy"]  # the way out to workers goes too
    # What is left is the jobs service's alone, as it was before the models service.
    assert values == jupyterhub_values(with_models({"enabled": False, "max_batch_size": 8}))
    assert [p["name"] for p in values["hub"]["service"]["extraPorts"]] == ["jobs"]
    assert schema_errors(schemas, "jupyterhub.yaml", values) == []
    assert [s["name"] for s in chart_config(values, tmp_path).JupyterHub.services] == ["dask-gateway", "jobs"]
    text = generate(disabled)[MODELS_RBAC_FILE]
    assert text.startswith("# generated by hubforge helm-values; do not edit")
    assert "models.enabled is false" in text and "kubectl delete" in text and "hubforge-models" in text
    assert not any(yaml.safe_load_all(text))


async def test_the_models_port_admits_workers_servers_and_the_proxy_only(tmp_path):
    values = checked_in("jupyterhub.yaml")
    ingress = values["hub"]["networkPolicy"]["ingress"]
    kubernetes_validate.validate(network_policy("hub", {"component": "hub"}, ingress, []), K8S_VERSION, strict=True)

    server = await make_user_pod([ROOT / "spawner_profiles"], {"profile": "cpu-small"}, "carol",
                                 config=chart_config(values, tmp_path))
    workers, runs = worker_pod_labels(), await run_pod_labels()
    for labels in (workers, server["metadata"]["labels"], PROXY_POD_LABELS, HUB_POD_LABELS):
        assert admitted(ingress, labels, 10103), labels
    # Not a pod HubForge did not label as a model worker, and each kind of HubForge pod
    # only on its own service's port: workers not on the jobs port or the hub's API,
    # runs not on the models port.
    assert not admitted(ingress, {"app.kubernetes.io/managed-by": "hubforge"}, 10103)
    assert not admitted(ingress, {"app.kubernetes.io/name": "hubforge-model"}, 10103)
    assert not admitted(ingress, {"app": "dask-gateway", "component": "traefik"}, 10103)
    assert not admitted(ingress, runs, 10103)
    assert not admitted(ingress, workers, 10102)
    assert not admitted(ingress, workers, 8081)


def test_workers_and_the_hub_reach_each_other_through_both_policies():
    """Both ends of each connection: the chart's hub policy (these values) and the
    worker's own NetworkPolicy (hubforge.k8s.models) agree on who and which port."""
    values = checked_in("jupyterhub.yaml")
    hub = network_policy("hub", {"component": "hub"}, values["hub"]["networkPolicy"]["ingress"],
                         values["hub"]["networkPolicy"]["egress"])
    kubernetes_validate.validate(hub, K8S_VERSION, strict=True)
    worker = make_model_network_policy(model="churn", version=3, owner="carol", namespace="hubforge")["spec"]
    workers = worker_pod_labels()
    assert selects(worker["podSelector"], workers)
    (port,) = [p for p in values["hub"]["service"]["extraPorts"] if p["name"] == "models"]
    # A worker fetches its model: out of its pod, into the hub's, on the Service's target port.
    assert admitted(worker["egress"], HUB_POD_LABELS, port["targetPort"])
    assert admitted(hub["spec"]["ingress"], workers, port["targetPort"])
    # The service calls a worker: out of the hub's pod, into the worker's, on 8080 only.
    assert admitted(hub["spec"]["egress"], workers, 8080)
    assert admitted(worker["ingress"], HUB_POD_LABELS, 8080)
    assert not admitted(hub["spec"]["egress"], workers, 10103)
    assert not admitted(hub["spec"]["egress"], {"app.kubernetes.io/managed-by": "hubforge"}, 8080)


def test_servers_and_the_proxy_may_reach_the_models_port():
    values = checked_in("jupyterhub.yaml")
    for who, egress in (("singleuser", values["singleuser"]["networkPolicy"]["egress"]),
                        ("proxy", values["proxy"]["chp"]["networkPolicy"]["egress"])):
        kubernetes_validate.validate(network_policy(who, {"component": who}, [], egress), K8S_VERSION, strict=True)
        assert admitted(egress, HUB_POD_LABELS, 10103), who
        assert admitted(egress, HUB_POD_LABELS, 10102), who  # the jobs service's rule is still there
        assert not admitted(egress, worker_pod_labels(), 8080), who  # workers are the service's business


def test_the_generated_values_have_no_yaml_anchors():
    # Selectors are shared between the jobs' and the models' rules; each is written out.
    assert "&id0" not in (HELM_VALUES / "jupyterhub.yaml").read_text()


# RBAC: helm-values/models-rbac.yaml.

_OBJECT_VERBS = {"create", "get", "list", "watch", "update", "patch", "delete"}
#: What the models service may do, and nothing more: (API group, resource) -> verbs.
MODELS_RIGHTS = {
    ("", "secrets"): _OBJECT_VERBS,
    ("", "services"): _OBJECT_VERBS,
    ("apps", "deployments"): _OBJECT_VERBS,
    ("autoscaling", "horizontalpodautoscalers"): _OBJECT_VERBS,
    ("networking.k8s.io", "networkpolicies"): _OBJECT_VERBS,
    ("", "pods"): {"get", "list"},
    ("", "pods/log"): {"get"},
}


def test_models_rbac_is_valid_namespaced_and_least_privilege():
    role, binding = rbac_documents(MODELS_RBAC_FILE)
    for doc in (role, binding):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert "namespace" not in doc["metadata"]  # kubectl apply --namespace <the hub's>
    assert (role["kind"], binding["kind"]) == ("Role", "RoleBinding")
    assert role["metadata"]["name"] == "hubforge-models"
    assert granted(role) == MODELS_RIGHTS
    assert "*" not in json.dumps(role["rules"])
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub"}]  # z2jh's hub account
    # Not the jobs service's Role: each can be applied and removed on its own.
    assert role["metadata"]["name"] != rbac_documents(JOBS_RBAC_FILE)[0]["metadata"]["name"]
    broken = helm_merge(role, {"rules": [{"apiGroups": ["apps"], "resources": "deployments", "verbs": ["get"]}]})
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def models_api_client():
    """A kubernetes_asyncio ApiClient that answers like a cluster, and remembers each
    request as RBAC sees it: model ``churn``'s Service exists already (409 on create),
    its pod gets ready; model ``broken``'s pod crash-loops; the namespace holds the
    objects of a model ``old`` that an earlier service left."""
    from kubernetes_asyncio.client import ApiClient, ApiException, Configuration

    class ModelsApiClient(ApiClient):
        def __init__(self):
            configuration = Configuration()
            configuration.host = "https://10.96.0.1:443"
            super().__init__(configuration)
            self.requests = []

        async def request(self, method, url, query_params=None, headers=None, post_params=None, body=None,
                          _preload_content=True, _request_timeout=None):
            if query_params:
                url += "?" + "&".join(f"{k}={v}" for k, v in query_params)
            namespace, resource, verb = api_request(method, url)
            self.requests.append((namespace, resource, verb))
            if verb == "create" and resource == ("", "services") and "churn" in body["metadata"]["name"]:
                conflict = ApiException(status=409, reason="Conflict")
                conflict.body = b'{"kind": "Status", "reason": "AlreadyExists"}'  # what the client decodes
                raise conflict
            if verb in ("create", "update"):
                return Response({**body, "metadata": {**body["metadata"], "uid": "uid-1"}}, 201)
            if verb == "get" and resource == ("", "services"):
                return Response({"metadata": {"name": "hubforge-model-churn-v3", "resourceVersion": "41"},
                                 "spec": {"clusterIP": "10.96.7.7", "clusterIPs": ["10.96.7.7"]}})
            if resource == ("", "pods/log"):
                return Response(b"Traceback (most recent call last):\nModuleNotFoundError: No module named 'xgb'\n")
            if resource == ("", "pods"):
                if "broken" in url:
                    return Response({"items": [{"metadata": {"name": "hubforge-model-broken-v1-x"}, "status": {
                        "containerStatuses": [{
                            "name": "worker", "image": "i", "imageID": "", "ready": False, "restartCount": 2,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                        }]}}]})
                return Response({"items": [{"metadata": {"name": "hubforge-model-churn-v3-x"},
                                            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]})
            if verb == "list":
                old = {"metadata": {"name": "hubforge-model-old-v1"}}
                if resource == ("autoscaling", "horizontalpodautoscalers"):  # the client requires a spec
                    old["spec"] = {"maxReplicas": 4, "scaleTargetRef": {"kind": "Deployment", "name": "x"}}
                return Response({"items": [old]})
            return Response({"kind": "Status", "status": "Success"})

    return ModelsApiClient()


async def test_models_rbac_covers_what_the_backend_does(monkeypatch):
    """Every request of a served version's life (create or replace its objects, wait for
    a ready pod, read a failed pod's log, delete) and of the start-up sweep is granted by
    the Role, in the hub's namespace."""
    from hubforge.models import kubernetes
    from hubforge.models.backends import WorkerSpec

    monkeypatch.setattr(kubernetes, "POLL_SECONDS", 0)
    api = models_api_client()
    backend = kubernetes.KubernetesBackend(namespace="hubforge", image="hubforge/cpu:2026.11", api_client=api)
    fetch_url = "http://hub:10103/services/models/internal/archive"
    try:
        host, port, name = await backend.start(WorkerSpec("churn", 3, "carol", "k" * 32, fetch_url))
        assert (host, port) == ("hubforge-model-churn-v3.hubforge.svc", 8080)
        with pytest.raises(RuntimeError, match="No module named 'xgb'"):
            await backend.start(WorkerSpec("broken", 1, "carol", "k" * 32, fetch_url))
        await backend.stop(name)
        assert await backend.sweep(set()) == ["hubforge-model-old-v1"]
    finally:
        await api.close()

    role, _ = rbac_documents(MODELS_RBAC_FILE)
    rights = granted(role)
    assert {namespace for namespace, _, _ in api.requests} == {"hubforge"}
    used = defaultdict(set)
    for _, resource, verb in api.requests:
        used[resource].add(verb)
        assert verb in rights.get(resource, set()), f"the Role does not grant {verb} {resource}"
    # Each kind of object the Role names is used, and replacing (update) is exercised.
    assert set(used) == set(rights)
    assert "update" in used[("", "services")]


# --- the dask-gateway server's configuration ----------------------------------------------
#
# gateway.extraConfig runs in the gateway pod, inside the chart's dask_gateway_config.py;
# these tests run it the same way, against dask-gateway-server's own classes.

GiB = 2**30
POWER_USERS = {"max_workers": 32, "max_cores": 32, "max_memory": "64 G", "worker_cores": 4, "worker_memory": "8 G"}


def with_dask(dask: dict) -> Settings:
    changed = Settings.load(DEFAULT_SETTINGS_FILE)
    changed.dask = dask
    return changed


def run_gateway_config(settings: Settings) -> tuple[Config, dict]:
    """The config the chart's dask_gateway_config.py ends with, and extraConfig's names."""
    pytest.importorskip("dask_gateway_server.backends.kubernetes", reason="dask-gateway-server[kubernetes] is missing")
    c = Config()  # what the chart's dask_gateway_config.py sets first
    c.DaskGateway.backend_class = "dask_gateway_server.backends.kubernetes.KubeBackend"
    c.KubeBackend.gateway_instance = "dask-gateway"
    c.KubeBackend.api_url = "http://api-dask-gateway.hubforge:8000/api"
    namespace = {"c": c}
    for key, code in sorted(dask_gateway_values(settings)["gateway"]["extraConfig"].items()):
        exec(compile(code, f"gateway.extraConfig.{key}", "exec"), namespace)
    return c, namespace


def user(name: str, *groups: str):
    from dask_gateway_server.models import User

    return User(name, groups=groups)


@pytest.fixture
def limited():
    """Three workers per cluster for everyone; power-users may take more."""
    return with_dask({"idle_timeout": 600, "limits": {"max_workers": 3}, "group_limits": {"power-users": POWER_USERS}})


def test_dask_limits_show_up_in_the_values():
    code = dask_gateway_values(with_dask({"limits": {"max_workers": 3}}))["gateway"]["extraConfig"]["hubforge"]
    assert '"max_workers": 3,' in code
    assert "c.KubeClusterConfig.idle_timeout = 1800" in code  # dask.idle_timeout's default


def test_the_gateway_uses_hubforges_backend_and_idle_timeout(limited):
    from dask_gateway_server.app import DaskGateway
    from dask_gateway_server.backends.kubernetes import KubeBackend, KubeClusterConfig

    c, ns = run_gateway_config(limited)
    backend_class = DaskGateway(config=c).backend_class
    assert issubclass(backend_class, KubeBackend) and backend_class is ns["HubForgeKubeBackend"]
    config_class = backend_class(config=c).cluster_config_class
    assert issubclass(config_class, KubeClusterConfig)
    assert config_class(config=c).idle_timeout == 600


@pytest.mark.parametrize(
    "groups, workers, cores, memory",
    [((), 3, 2, 4.0), (("power-users",), 32, 4, 8.0), (("power-users", "other"), 32, 4, 8.0)],
)
def test_cluster_options_are_bounded_by_the_users_limits(limited, groups, workers, cores, memory):
    c, _ = run_gateway_config(limited)
    spec = {f["field"]: f for f in c.Backend.cluster_options(user("u", *groups)).get_specification()}
    for field in ("workers", "adapt_minimum", "adapt_maximum"):
        assert spec[field]["spec"]["max"] == workers
    assert spec["worker_cores"]["spec"]["max"] == cores
    assert spec["worker_memory"]["spec"]["max"] == memory
    assert spec["image"]["spec"]["options"] == ["hubforge/cpu:2026.11", "hubforge/cpu:2026.08"]
    assert spec["image"]["default"] == "hubforge/cpu:2026.11"


async def test_the_options_handler_sets_the_worker_size_and_the_worker_limit(limited):
    c, ns = run_gateway_config(limited)
    backend = ns["HubForgeKubeBackend"](config=c)

    options, config = await backend.process_cluster_options(user("alice"), {"workers": 2, "origin": "server:"})
    config = config.to_dict()
    assert config["hubforge_max_workers"] == 3  # max_workers binds before max_cores 8 or max_memory 16 GiB
    assert config["max_workers_reason"] == "max_workers 3"
    assert config["cluster_max_workers"] is None  # or dask-gateway's routes would cap requests silently
    assert config["cluster_max_cores"] is None and config["cluster_max_memory"] is None
    assert (config["worker_cores"], config["worker_cores_limit"], config["worker_threads"]) == (1, 1, 1)
    assert config["worker_memory"] == config["worker_memory_limit"] == 2 * GiB
    assert (config["initial_workers"], config["origin"], config["image"]) == (2, "server:", "hubforge/cpu:2026.11")
    assert config["idle_timeout"] == 600

    request = {"worker_cores": 4, "worker_memory": 8.0, "adapt_minimum": 1, "adapt_maximum": 8}
    _, config = await backend.process_cluster_options(user("carol", "power-users"), request)
    assert config.hubforge_max_workers == 8  # 32 cores at 4 a worker, 64 GiB at 8 GiB a worker
    assert config.max_workers_reason == "max_cores 32 at 4 cores per worker"
    assert config.cluster_max_workers is None
    assert (config.initial_workers, config.adapt_minimum, config.adapt_maximum) == (0, 1, 8)
    assert config.worker_memory == 8 * GiB


@pytest.mark.parametrize(
    "groups, request_, message",
    [
        ((), {"worker_cores": 4}, "worker_cores must be <= 2"),
        ((), {"worker_memory": 5.0}, "worker_memory must be <= 4"),
        ((), {"workers": 4}, "workers must be <= 3"),
        ((), {"origin": "x", "gpus": 1}, "Unknown fields ['gpus']"),
        (("power-users",), {"worker_cores": 4, "workers": 9},
         "workers=9 is over your limit of 8 workers per cluster (max_cores 32 at 4 cores per worker) "
         "(set by the admin in dask.limits, hub_config/hubforge.yaml)"),
    ],
)
async def test_requests_over_a_limit_are_refused(limited, groups, request_, message):
    from dask_gateway_server.backends.base import PublicException

    c, ns = run_gateway_config(limited)
    with pytest.raises(PublicException) as e:
        await ns["HubForgeKubeBackend"](config=c).process_cluster_options(user("u", *groups), request_)
    assert message in str(e.value)


def test_max_workers_is_the_settings_rule():
    from hubforge.dask.settings import Limits

    _, ns = run_gateway_config(with_dask({}))
    for limits in (Limits(), Limits(max_workers=100, max_cores=7.5, max_memory=10 * GiB)):
        for cores in (0, 0.5, 1, 2, 3):
            for memory in (0, GiB // 2, 2 * GiB, 3 * GiB):
                assert ns["hubforge_max_workers"](limits.to_json(), cores, memory) == \
                    limits.max_workers_for(cores, memory), (limits, cores, memory)


class RecordingSession:
    """An aiohttp session that remembers what is posted to schedulers instead of sending it."""

    def __init__(self, sent: list):
        self.sent = sent

    async def post(self, url, json=None, headers=None, raise_for_status=False):
        self.sent.append((url, json))

    async def close(self):
        """Nothing to close: no connection was opened."""


class RecordingCustomObjects:
    """Kubernetes' custom objects API, remembering the DaskClusters it is asked to create or patch."""

    def __init__(self):
        self.created = []
        self.patched = []

    async def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.patched.append((name, body))

    async def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append(body)
        return body


def backend_without_kubernetes(c: Config, ns: dict):
    """HubForge's backend with the state KubeBackend.setup would make, and no cluster behind it.

    Messages to schedulers are recorded instead of sent, as (cluster name, message): they go
    through HubForge's forward_message_to_scheduler and dask-gateway's, down to the session.
    """
    from dask_gateway_server.utils import Flag

    class RecordingBackend(ns["HubForgeKubeBackend"]):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.posted = []
            self.session = RecordingSession(self.posted)
            self.clusters, self.username_to_clusters = {}, defaultdict(dict)
            self.cluster_waiters = defaultdict(Flag)
            self.custom_client = RecordingCustomObjects()

        @property
        def sent(self):
            return [(url.removeprefix("http://").removesuffix("/api/comm"), msg) for url, msg in self.posted]

        def informer_sees(self, name: str, status) -> None:
            """What KubeBackend.sync_cluster does when the informer reports a cluster."""
            from dask_gateway_server.models import Cluster

            body = next(b for b in self.custom_client.created if name.endswith("." + b["metadata"]["name"]))
            cluster = Cluster(name, body["spec"]["username"], "", body["spec"]["options"],
                              body["spec"]["config"], status, api_address=f"http://{name}")
            self.clusters[name] = self.username_to_clusters[cluster.username][name] = cluster
            if status >= cluster.status.RUNNING:
                self.cluster_waiters[name].set()

    return RecordingBackend(config=c)


async def test_a_user_over_max_clusters_is_refused_counting_clusters_not_yet_seen(limited):
    from dask_gateway_server.backends.base import PublicException
    from dask_gateway_server.models import ClusterStatus

    backend = backend_without_kubernetes(*run_gateway_config(limited))
    first = await backend.start_cluster(user("alice"), {})
    await backend.start_cluster(user("alice"), {})  # neither is in the informer's cache yet
    with pytest.raises(PublicException) as e:
        await backend.start_cluster(user("alice"), {})
    assert str(e.value).startswith("you already have 2 running clusters and your limit is 2 "
                                   "(dask.limits.max_clusters, hub_config/hubforge.yaml)")
    await backend.start_cluster(user("bob"), {})  # a limit per user

    backend.informer_sees(first, ClusterStatus.STOPPED)
    await backend.start_cluster(user("alice"), {})
    assert [b["spec"]["username"] for b in backend.custom_client.created] == ["alice", "alice", "bob", "alice"]
    await backend.cleanup()


@pytest.mark.parametrize(
    "request_, sent",
    [
        ({"workers": 2}, [{"op": "scale", "count": 2}]),
        ({"adapt_minimum": 1, "adapt_maximum": 3}, [{"op": "adapt", "minimum": 1, "maximum": 3, "active": True}]),
        ({}, []),
    ],
)
async def test_a_new_cluster_asks_for_its_workers_once_it_runs(limited, request_, sent):
    from dask_gateway_server.models import ClusterStatus

    backend = backend_without_kubernetes(*run_gateway_config(limited))
    name = await backend.start_cluster(user("alice"), request_)
    (task,) = backend.hubforge_tasks
    backend.informer_sees(name, ClusterStatus.PENDING)
    await asyncio.sleep(0.05)
    assert backend.sent == []
    backend.informer_sees(name, ClusterStatus.RUNNING)
    await asyncio.wait_for(task, 5)
    assert backend.sent == [(name, msg) for msg in sent]
    await backend.cleanup()


async def running_cluster(backend, user_, request_):
    """A cluster of user_'s, started with request_ and seen running, its start-up request sent."""
    from dask_gateway_server.models import ClusterStatus

    name = await backend.start_cluster(user_, request_)
    (task,) = backend.hubforge_tasks
    backend.informer_sees(name, ClusterStatus.RUNNING)
    await asyncio.wait_for(task, 5)
    return backend.clusters[name]


OVER_THE_LIMIT = ("over your limit of 8 workers per cluster (max_cores 32 at 4 cores per worker; "
                  "set by the admin in dask.limits, hub_config/hubforge.yaml)")


@pytest.mark.parametrize(
    "msg, refused",
    [
        ({"op": "scale", "count": 9}, "a cluster of 9 workers is " + OVER_THE_LIMIT),
        ({"op": "adapt", "minimum": 0, "maximum": 9, "active": True}, "a cluster of 9 workers is " + OVER_THE_LIMIT),
        ({"op": "adapt", "minimum": 9, "maximum": None, "active": True}, "a cluster of 9 workers is " + OVER_THE_LIMIT),
        ({"op": "adapt", "minimum": None, "maximum": 12, "active": True}, "a cluster of 12 workers is " + OVER_THE_LIMIT),
    ],
)
async def test_scaling_over_the_worker_limit_is_refused_not_capped(limited, msg, refused):
    from dask_gateway_server.backends.base import PublicException

    backend = backend_without_kubernetes(*run_gateway_config(limited))
    cluster = await running_cluster(backend, user("carol", "power-users"), {"worker_cores": 4, "workers": 2})
    assert backend.sent == [(cluster.name, {"op": "scale", "count": 2})]  # the start-up request
    # dask-gateway's routes pass the request on uncut (no cluster_max_workers) and answer a
    # PublicException with 409 and its message.
    assert cluster.config["cluster_max_workers"] is None
    with pytest.raises(PublicException) as e:
        await backend.forward_message_to_scheduler(cluster, msg)
    assert str(e.value) == refused
    assert len(backend.sent) == 1
    await backend.cleanup()


@pytest.mark.parametrize(
    "msg, sent",
    [
        ({"op": "scale", "count": 8}, {"op": "scale", "count": 8}),
        ({"op": "scale", "count": 0}, {"op": "scale", "count": 0}),
        ({"op": "adapt", "minimum": None, "maximum": None, "active": True},
         {"op": "adapt", "minimum": None, "maximum": 8, "active": True}),
        ({"op": "adapt", "minimum": 2, "maximum": 8, "active": True},
         {"op": "adapt", "minimum": 2, "maximum": 8, "active": True}),
        ({"op": "adapt", "minimum": 0, "maximum": 20, "active": False},  # stops adapting
         {"op": "adapt", "minimum": 0, "maximum": 20, "active": False}),
    ],
)
async def test_scaling_within_the_worker_limit_is_sent(limited, msg, sent):
    backend = backend_without_kubernetes(*run_gateway_config(limited))
    cluster = await running_cluster(backend, user("carol", "power-users"), {"worker_cores": 4})
    await backend.forward_message_to_scheduler(cluster, msg)
    assert backend.sent == [(cluster.name, sent)]
    await backend.cleanup()


@pytest.mark.parametrize("count, replicas", [(2, 2), (3, 3), (50, 3)])
async def test_a_heartbeat_asks_kubernetes_for_no_more_workers_than_the_limit(limited, count, replicas):
    backend = backend_without_kubernetes(*run_gateway_config(limited))
    cluster = await running_cluster(backend, user("alice"), {})
    msg = {"count": count, "active_workers": [], "closing_workers": [], "closed_workers": []}
    await backend.on_cluster_heartbeat(cluster.name, msg)
    assert backend.custom_client.patched == [
        (cluster.name.split(".")[1], [{"op": "add", "path": "/spec/replicas", "value": replicas}])
    ]
    await backend.cleanup()


def test_dask_disabled_leaves_no_gateway(schemas):
    disabled = with_dask({"enabled": False})
    assert dask_gateway_values(disabled) == {}
    text = generate(disabled)["dask-gateway.yaml"]
    assert text.startswith("# generated by hubforge helm-values; do not edit")
    assert "dask.enabled is false" in text and "helm uninstall dask-gateway" in text
    assert yaml.safe_load(text) is None

    hub = jupyterhub_values(disabled)
    assert "services" not in hub["hub"] and "loadRoles" not in hub["hub"]
    assert "extraEnv" not in hub["singleuser"]
    assert schema_errors(schemas, "jupyterhub.yaml", hub) == []
    # Only the Dask parts differ from the enabled values.
    enabled = jupyterhub_values(with_dask({}))
    assert {k: v for k, v in enabled["hub"].items() if k not in ("services", "loadRoles")} == hub["hub"]
