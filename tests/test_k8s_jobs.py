"""The Kubernetes Job and Secret of a scheduled notebook's run, without a cluster.

The Job's pod is the user's server pod for the job's profile (built by KubeSpawner's
own code, offline) turned into a batch run; every manifest is validated against the
Kubernetes OpenAPI schema with kubernetes-validate (strict: unknown fields fail).
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
from tornado.web import HTTPError
from traitlets.config import Config

from hubforge.k8s import make_user_pod, offline_spawner, pods
from hubforge.k8s.jobs import RUN_DIR, make_run_job, make_run_secret

ROOT = Path(__file__).resolve().parent.parent
PROFILES = [ROOT / "spawner_profiles"]
K8S_VERSION = "1.33"
SERVICE_URL = "http://hub:10102/services/jobs/"
TOKEN = "run-token-8c1f0e6a77d94b2c"
DEDICATED = {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}


async def _job(options, username="carol", run_id=17, **kw):
    kw.setdefault("job_name", "nightly-report")
    kw.setdefault("service_url", SERVICE_URL)
    kw.setdefault("timeout", 600)
    return await make_run_job(PROFILES, options, username, run_id=run_id, **kw)


def _container(manifest):
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("options", [{"profile": "cpu-small"}, {"profile": "gpu-1"}], ids=["cpu", "gpu"])
async def test_the_run_pod_is_the_server_pod_of_the_profile_turned_into_a_job(options):
    job = await _job(options)
    server = await make_user_pod(PROFILES, options, "carol")
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "hubforge-run-17"
    assert job["metadata"]["namespace"] == "default"
    labels = {"app.kubernetes.io/managed-by": "hubforge", "hubforge.jobs/run": "17", "hubforge.jobs/user": "carol"}
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert {k: job["spec"][k] for k in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished")} == {
        "backoffLimit": 0, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 3600,
    }

    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    for key in ("nodeSelector", "tolerations", "securityContext"):
        assert pod.get(key) == server["spec"].get(key), key
    assert pod["volumes"][:-1] == server["spec"]["volumes"]
    assert pod["volumes"][-1] == {
        "name": "hubforge-run",
        "secret": {"secretName": "hubforge-run-17", "items": [{"key": "input.json", "path": "input.json"}]},
    }

    (server_container,) = server["spec"]["containers"]
    container = _container(job)
    for key in ("image", "resources", "securityContext"):
        assert container[key] == server_container[key], key
    assert container["command"] == [
        "python", "-m", "hubforge.jobs.runner",
        "--input", "/var/run/hubforge-run/input.json",
        "--report-url", "http://hub:10102/services/jobs/api/runner/17",
    ]
    assert "args" not in container and "ports" not in container
    assert container["workingDir"] == "/home/jovyan"
    assert container["volumeMounts"] == [
        *server_container["volumeMounts"],
        {"name": "hubforge-run", "mountPath": RUN_DIR, "readOnly": True},
    ]


async def test_gpu_run_gets_the_gpu_limit_node_selector_and_toleration():
    job = await _job({"profile": "gpu-1"})
    pod = job["spec"]["template"]["spec"]
    assert _container(job)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert _container(job)["image"] == "hubforge/gpu:2026.11"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


async def test_cpu_run_has_no_gpu_and_the_profiles_choices_apply():
    job = await _job({"profile": "cpu-small", "size": "mini", "image": "2026.08"})
    container = _container(job)
    assert container["image"] == "hubforge/cpu:2026.08"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert float(container["resources"]["limits"]["cpu"]) == 0.5
    assert not job["spec"]["template"]["spec"].get("nodeSelector")


async def test_the_run_env_has_the_profile_and_the_token_by_reference_but_no_hub_credentials():
    job = await _job({"profile": "gpu-1"})
    env = {e["name"]: e for e in _container(job)["env"]}
    assert env["HUBFORGE_RUN_TOKEN"] == {
        "name": "HUBFORGE_RUN_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hubforge-run-17", "key": "token"}},
    }
    assert env["OMP_NUM_THREADS"]["value"] == "8"  # the profile's environment
    assert env["HUBFORGE_PROFILE"]["value"] == "gpu-1"
    assert env["HUBFORGE_RUN_ID"]["value"] == "17"
    assert env["JUPYTERHUB_USER"]["value"] == "carol"
    # The server's hub wiring is gone: no API token, OAuth client, activity or service URL.
    hub_vars = sorted(n for n in env if n.startswith(("JUPYTERHUB_", "JPY_")))
    assert hub_vars == ["JUPYTERHUB_USER"]


async def test_no_token_value_appears_anywhere_in_the_job(monkeypatch):
    hub_token = "hub-api-token-5f1d2e"

    def spawner_with_a_token(*args, **kwargs):
        # What the hub does before a spawn: give the server its API token.
        spawner = offline_spawner(*args, **kwargs)
        spawner.api_token = hub_token
        return spawner

    monkeypatch.setattr(pods, "offline_spawner", spawner_with_a_token)
    server = await make_user_pod(PROFILES, {"profile": "cpu-small"}, "carol")
    assert hub_token in json.dumps(server)  # the server pod has it ...
    job = await _job({"profile": "cpu-small"})
    secret = make_run_secret(17, "carol", run_input={"parameters": {"alpha": 0.5}}, token=TOKEN)
    text = json.dumps(job)
    assert hub_token not in text  # ... the run's pod does not
    assert TOKEN not in text
    assert secret["stringData"]["token"] == TOKEN  # the Secret is where it lives


async def test_the_server_pods_kubespawner_labels_are_not_copied():
    job = await _job({"profile": "cpu-small"})
    template = job["spec"]["template"]["metadata"]
    # The hub's pod reflector selects server pods by component=singleuser-server.
    assert "component" not in template["labels"]
    assert not any(k.startswith("hub.jupyter.org/") for k in template["labels"])


async def test_a_username_is_escaped_for_names_and_labels_and_kept_in_annotations():
    job = await _job({"profile": "cpu-small"}, username="Alice.Smith@x", run_id=3, namespace="hub")
    secret = make_run_secret(3, "Alice.Smith@x", run_input={}, token=TOKEN, namespace="hub")
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    escaped = "alice-smith-x---447215f1"  # KubeSpawner's safe slug: lowercase, hash-suffixed
    for obj in (job, job["spec"]["template"], secret):
        assert obj["metadata"]["labels"]["hubforge.jobs/user"] == escaped
        assert obj["metadata"]["annotations"]["hubforge.jobs/username"] == "Alice.Smith@x"
    assert job["metadata"]["name"] == secret["metadata"]["name"] == "hubforge-run-3"
    assert job["metadata"]["namespace"] == secret["metadata"]["namespace"] == "hub"
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert volumes[0] == {"name": "home", "persistentVolumeClaim": {"claimName": f"claim-{escaped}"}}
    # The same label value as the user's server pod: one selector finds both.
    server = await make_user_pod(PROFILES, {"profile": "cpu-small"}, "Alice.Smith@x")
    assert server["metadata"]["labels"]["hub.jupyter.org/username"] == escaped


async def test_cluster_config_applies_to_runs_as_to_servers():
    config = Config()
    config.KubeSpawner.tolerations = [DEDICATED]
    config.KubeSpawner.image_pull_secrets = ["registry"]
    job = await _job({"profile": "gpu-1"}, config=config)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["tolerations"][0] == DEDICATED and len(pod["tolerations"]) == 2
    assert pod["imagePullSecrets"] == [{"name": "registry"}]


async def test_a_service_url_without_a_trailing_slash_gives_the_same_report_url():
    job = await _job({}, service_url=SERVICE_URL.rstrip("/"))
    assert _container(job)["command"][-1] == "http://hub:10102/services/jobs/api/runner/17"


def test_the_secret_holds_the_input_and_the_token():
    run_input = {"notebook": {"cells": []}, "parameters": {"alpha": 0.5}, "timeout": 600}
    secret = make_run_secret(17, "carol", run_input=run_input, token=TOKEN, namespace="hub", job_uid="uid-1")
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    assert secret["metadata"]["name"] == "hubforge-run-17"
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "hubforge", "hubforge.jobs/run": "17", "hubforge.jobs/user": "carol",
    }
    assert json.loads(secret["stringData"]["input.json"]) == run_input
    assert secret["stringData"]["token"] == TOKEN
    assert secret["immutable"] is True
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "hubforge-run-17", "uid": "uid-1",
         "blockOwnerDeletion": False},
    ]
    assert "ownerReferences" not in make_run_secret(17, "carol", run_input={}, token=TOKEN)["metadata"]


async def test_the_schema_check_can_fail():
    job = await _job({"profile": "cpu-small"})
    job["spec"]["backoffLimitz"] = 0
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


async def test_a_profile_the_users_groups_do_not_allow_is_refused_with_400():
    with pytest.raises(HTTPError) as e:
        await _job({"profile": "cpu-xlarge"}, username="bob")
    assert e.value.status_code == 400
    assert "user_options['profile']" in e.value.log_message
    # With the group that profile needs, the same job builds.
    job = await _job({"profile": "cpu-xlarge"}, username="bob", groups=["power-users"])
    assert _container(job)["resources"]["limits"]["cpu"] == 16.0


@pytest.mark.parametrize(
    "options, field",
    [
        ({"profile": "no-such-profile"}, "profile"),
        ({"profile": "cpu-small", "image": "1999.01"}, "image"),
        ({"profile": "gpu-1", "image--unlisted-choice": "evil/miner:latest"}, "image--unlisted-choice"),
    ],
)
async def test_a_bad_option_fails_as_the_spawner_does(options, field):
    with pytest.raises(HTTPError) as job_error:
        await _job(options)
    with pytest.raises(HTTPError) as spawn_error:
        await make_user_pod(PROFILES, options, "carol")
    assert job_error.value.status_code == spawn_error.value.status_code == 400
    assert job_error.value.log_message == spawn_error.value.log_message
    assert job_error.value.log_message.startswith(f"user_options[{field!r}]")


# --- the jobs service's hub configuration in mode kubernetes ------------------------------
#
# The service runs in the hub's pod; the hub's config (hub.extraConfig on the chart, or
# HubForge's own hub config) tells it where it listens, how the hub and run pods reach it
# and which namespace its Jobs go in.


def _configure(monkeypatch, tmp_path, env: dict, **settings_kw):
    from hubforge.jobs.hubconfig import configure_jobs_service
    from hubforge.settings import Settings

    for name in ("POD_IP", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                 "HUBFORGE_JOBS_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(source=str(tmp_path / "hubforge.yaml"), data_dir=str(tmp_path / "data"),
                        profiles=[str(p) for p in PROFILES], **settings_kw)
    c, services, roles = Config(), [], []
    configure_jobs_service(c, settings, services, roles)
    (service,) = services
    return service, json.loads(service["environment"]["HUBFORGE_JOBS_CONFIG"])


def test_without_the_pods_ip_the_hub_knows_the_service_by_the_hubs_service_name(monkeypatch, tmp_path):
    service, config = _configure(monkeypatch, tmp_path, {}, mode="kubernetes",
                                 bind_url="http://0.0.0.0:8000/@/space%20word/")
    assert service["url"] == "http://hub:10102"
    assert service["environment"]["HUBFORGE_JOBS_BIND"] == "0.0.0.0:10102"
    # HubForge's own hub config: the base URL is bind_url's path.
    assert config["kubernetes"] == {"namespace": "default",
                                    "service_url": "http://hub:10102/@/space%20word/services/jobs/",
                                    "spawner_config": {}}  # this hub config sets no KubeSpawner options
    assert not {"KUBERNETES_SERVICE_HOST", "HUBFORGE_JOBS_DB_URL"} & set(service["environment"])


def test_an_ipv6_pod_listens_on_ipv6(monkeypatch, tmp_path):
    service, _ = _configure(monkeypatch, tmp_path, {"POD_IP": "fd00:10:244::17"}, mode="kubernetes")
    assert service["url"] == "http://[fd00:10:244::17]:10102"
    host, _, port = service["environment"]["HUBFORGE_JOBS_BIND"].rpartition(":")
    assert (host, port) == ("::", "10102")


def test_the_settings_file_db_url_gives_way_to_the_hubs_environment(monkeypatch, tmp_path):
    service, _ = _configure(monkeypatch, tmp_path, {}, mode="kubernetes", jobs={"db_url": "sqlite:////x.sqlite"})
    assert service["environment"]["HUBFORGE_JOBS_DB_URL"] == "sqlite:////x.sqlite"
    service, _ = _configure(monkeypatch, tmp_path, {"HUBFORGE_JOBS_DB_URL": "postgresql://db/jobs"},
                            mode="kubernetes", jobs={"db_url": "sqlite:////x.sqlite"})
    assert service["environment"]["HUBFORGE_JOBS_DB_URL"] == "postgresql://db/jobs"


def test_local_mode_is_unchanged(monkeypatch, tmp_path):
    env = {"POD_IP": "10.42.0.17", "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    service, config = _configure(monkeypatch, tmp_path, env, mode="local", local={"isolation": "shared"})
    assert service["url"].startswith("http://127.0.0.1:")
    assert set(service["environment"]) == {"HUBFORGE_JOBS_CONFIG"}
    assert config["mode"] == "local" and "kubernetes" not in config
