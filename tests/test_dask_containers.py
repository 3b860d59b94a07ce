"""Dask in mode `containers`: schedulers and workers are podman containers of the user's image."""

from __future__ import annotations

import os

import pytest
from hubprocess import wait_for
from test_containers import chub, cpu_image, needs_podman, podman  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.containers]

hd = pytest.importorskip("hubforge.dask")


#: podman's marker file in every container (the function is pickled by reference, so
#: the container can run it: a function of this test module could not be imported there)
MARKER = "/run/.containerenv"


def dask_containers(cluster: str) -> list[str]:
    out = podman("ps", "-a", "--filter", f"label=hubforge.dask.cluster={cluster}", "--format", "{{.Names}}")
    return out.stdout.split()


@needs_podman
def test_cluster_runs_in_containers_of_the_image(chub):  # noqa: F811
    from dask_gateway.auth import JupyterHubAuth

    token = chub.make_user(chub.admin, "dctest")
    info = chub.request("GET", "/services/dask-gateway", token).json()["info"]
    kw = {"address": info["address"], "proxy_address": info["proxy_address"],
          "auth": JupyterHubAuth(api_token=token)}
    # the image option is what every container server's environment sends
    image = next(iter(hd.options(**kw)._fields["image"].options))
    gw = hd.gateway(**kw)
    name = gw.submit(image=image, workers=2, worker_memory=0.5, origin="")
    try:
        cluster = gw.connect(name, shutdown_on_close=False)
        client = cluster.get_client(set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        assert client.run_on_scheduler(os.path.exists, MARKER) is True
        assert set(client.run(os.path.exists, MARKER).values()) == {True}
        assert os.path.exists(MARKER) is False  # and the test itself does not run in one
        import dask.array as da

        total = client.compute(da.arange(100_000, chunks=10_000).sum()).result()
        assert total == 99_999 * 100_000 // 2
        assert len(dask_containers(name)) == 3
        # secrets are passed by name, never on the command line
        inspect = podman("inspect", "--format", "{{json .Config.CreateCommand}}", f"hubforge-dask-{name}-scheduler")
        assert "BEGIN" not in inspect.stdout and "DASK_GATEWAY_API_TOKEN=" not in inspect.stdout
        client.close()
    finally:
        hd.shutdown(name, gateway_kwargs=kw)
    wait_for(lambda: dask_containers(name) == [], 60, what="the cluster's containers removed")
