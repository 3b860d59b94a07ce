"""Scheduled jobs in mode `containers`: each run is a podman container of the profile's image."""

from __future__ import annotations

import json
import os

import nbformat
import pytest
from hubprocess import wait_for
from test_containers import chub, cpu_image, needs_podman, podman  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.containers]
FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


def runner_containers() -> list[str]:
    return podman("ps", "-a", "--filter", "label=hubforge.jobs=runner", "--format", "{{.Names}}").stdout.split()


def host_processes() -> str:
    import subprocess

    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=30).stdout


def notebook(*cells: str) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("n = 2", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return json.loads(nbformat.writes(nb))


@needs_podman
def test_runs_execute_in_containers_of_the_profile_image(chub, cpu_image):  # noqa: F811
    token = chub.make_user(chub.admin, "ctestjobs")

    def api(method, path, **kw):
        return chub.service_request(method, "jobs", path, token, **kw)

    def finished(run_id):
        run = api("GET", f"api/runs/{run_id}").json()
        return run if run["status"] in FINAL else None

    nb = notebook("import os\nprint(n * 21, os.getuid(), os.environ['HOME'], os.path.exists('/run/.containerenv'))\n"
                  "open('from-a-job.txt', 'w').write('kept')")
    r = api("POST", "api/jobs", json={"notebook": {"path": "c.ipynb", "content": nb}, "parameters": {"n": 3},
                                      "profile": "cpu-small"})
    assert r.status_code == 201, r.text
    runs = wait_for(lambda: api("GET", f"api/jobs/{r.json()['id']}/runs").json()["runs"], 60, what="a run")
    run = wait_for(lambda: finished(runs[0]["id"]), 240, what="the run")
    assert run["status"] == "succeeded", (run, api("GET", f"api/runs/{run['id']}/log").text[-2000:])
    out = api("GET", f"api/runs/{run['id']}/output").json()
    assert "63 1000 /home/jovyan True" in json.dumps(out)  # jovyan, in the image, its home volume
    # The file the notebook wrote is in the user's home volume, as a server would see it.
    listing = podman("run", "--rm", "--volume", "hubforge-home-ctestjobs:/home/jovyan", "--entrypoint", "cat",
                     cpu_image, "/home/jovyan/from-a-job.txt")
    assert listing.stdout.strip() == "kept"

    # A watch trigger on the home volume: a file landing there starts a run in a container.
    mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", "hubforge-home-ctestjobs").stdout.strip()
    incoming = os.path.join(mountpoint, "incoming")
    os.makedirs(incoming, exist_ok=True)
    watch_nb = notebook("import os\nprint('landed', open(os.path.join(os.environ['HOME'], trigger_file)).read())")
    watched = api("POST", "api/jobs", json={"notebook": {"path": "w.ipynb", "content": watch_nb}, "name": "on-csv",
                                            "trigger": {"type": "watch", "path": "incoming/*.csv"}, "profile": "cpu-small"})
    assert watched.status_code == 201, watched.text
    job_id = watched.json()["id"]
    wait_for(lambda: api("GET", f"api/jobs/{job_id}").json()["watched_files"] == 0, 60, what="the watch's first look")
    with open(os.path.join(incoming, "a.csv"), "w") as f:
        f.write("x,1")
    runs = wait_for(lambda: api("GET", f"api/jobs/{job_id}/runs").json()["runs"], 60, what="a watch run")
    run = wait_for(lambda: finished(runs[0]["id"]), 120, what="the watch run")
    assert run["status"] == "succeeded" and run["parameters"] == {"trigger_file": "incoming/a.csv"}, run
    assert "landed x,1" in json.dumps(api("GET", f"api/runs/{run['id']}/output").json())

    # A process the notebook starts, findable from the host: it must die with the run.
    slow_cell = "import subprocess, time\nsubprocess.Popen(['sleep', '612.5'])\ntime.sleep(600)"
    slow = api("POST", "api/jobs", json={"notebook": {"path": "s.ipynb", "content": notebook(slow_cell)},
                                         "name": "slow", "timeout": 20, "profile": "cpu-small"})
    assert slow.status_code == 201, slow.text
    runs = wait_for(lambda: api("GET", f"api/jobs/{slow.json()['id']}/runs").json()["runs"], 60, what="a run")
    run = wait_for(lambda: finished(runs[0]["id"]), 120, what="the slow run to time out")
    assert run["status"] == "timed_out"
    # The timed-out run's container went with everything in it; warm runners may remain.
    wait_for(lambda: "sleep 612.5" not in host_processes(), 30, what="the timed-out run's processes to be gone")
    wait_for(lambda: len(runner_containers()) <= 3, 30, what="no more containers than warm runners (3)")
