"""Model serving in mode `containers`: a served version is a podman container of the CPU image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hubprocess import wait_for
from test_containers import chub, cpu_image, needs_podman, podman  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.containers]


def model_containers(name: str) -> list[str]:
    return podman("ps", "-a", "--filter", f"label=hubforge.model={name}", "--format", "{{.Names}}").stdout.split()


@needs_podman
def test_a_version_is_served_from_a_container_of_the_image_and_removed_with_it(chub, cpu_image, tmp_path):  # noqa: F811
    from sklearn.linear_model import LinearRegression

    from hubforge.models.archive import pack
    from hubforge.models.client import save

    token = chub.make_user(chub.admin, "ctestmodels")
    X = pd.DataFrame(np.random.default_rng(3).normal(size=(200, 4)), columns=list("abcd"))
    model = LinearRegression().fit(X, X.a * 3 - X.d)
    save(model, str(tmp_path / "m"), input_example=X)

    def api(method, path, **kw):
        return chub.service_request(method, "models", path, token, **kw)

    r = api("POST", "api/models/ctest-lr/versions", data=pack(tmp_path / "m"),
            headers={"Content-Type": "application/gzip"}, timeout=300)
    assert r.status_code == 201, (r.text, chub.log()[-3000:])
    names = model_containers("ctest-lr")
    assert len(names) == 1, names
    # The image's unprivileged user, on the host network, with the worker's command line.
    inspect = podman("inspect", "--format", "{{.Config.User}} {{.HostConfig.NetworkMode}} {{.Config.Image}}",
                     names[0]).stdout.split()
    assert inspect[1] == "host" and cpu_image.split(":")[0] in inspect[2], inspect
    assert podman("exec", names[0], "id", "-u").stdout.strip() == "1000"

    rows = X.head(4)
    r = api("POST", "ctest-lr/predict", json={"dataframe_records": rows.to_dict(orient="records")})
    assert r.status_code == 200, r.text
    assert np.allclose(r.json()["predictions"], model.predict(rows))

    assert api("DELETE", "api/models/ctest-lr").status_code == 204
    wait_for(lambda: not model_containers("ctest-lr"), 60, what="the model's container to go")
    assert api("POST", "ctest-lr/predict", json={"dataframe_records": []}).status_code == 404
