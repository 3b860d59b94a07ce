"""Runs that report over HTTP (how runs on Kubernetes talk to the jobs service).

No cluster here, so a test double stands in for the Kubernetes API only: instead of a
Job, `ProcessInsteadOfJob` starts the same command a run's pod runs (``python -m
hubforge.jobs.runner --input ... --report-url ...``, token in ``HUBFORGE_RUN_TOKEN``) as
a local process. Everything else is real: the scheduler, the database, the runner,
papermill, the kernel, and the HTTP endpoint the runner reports to with its token.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import nbformat
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.web import Application

from hubforge.jobs.db import Job, Run, make_engine, sessions, upgrade
from hubforge.jobs.kubernetes import KubernetesExecutor, RunnerReportHandler
from hubforge.jobs.scheduler import Scheduler
from hubforge.jobs.settings import JobsSettings
from hubforge.profiles.resolve import ResolvedProfile


class ProcessInsteadOfJob(KubernetesExecutor):
    """The Kubernetes executor with a local process where the cluster would run the Job."""

    procs: dict[int, subprocess.Popen]

    async def submit(self, slot, command):
        import hashlib
        import secrets as _secrets

        token = _secrets.token_urlsafe(32)
        self.remote[slot.run_id] = (hashlib.sha256(token.encode()).digest(), slot)
        path = self.jobs_dir / f"input-{slot.run_id}.json"
        path.write_text(json.dumps({**command, "kernel": slot.kernel, "cwd": str(self.jobs_dir)}))
        self.procs[slot.run_id] = subprocess.Popen(
            [sys.executable, "-m", "hubforge.jobs.runner", "--input", str(path),
             "--report-url", f"{self.service_url}api/runner/{slot.run_id}"],
            env={**os.environ, "HUBFORGE_RUN_TOKEN": token}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    async def _delete(self, slot):
        self.remote.pop(slot.run_id, None)
        proc = self.procs.get(slot.run_id)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def notebook(*cells) -> dict:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return json.loads(nbformat.writes(nb))


@pytest.fixture
async def remote(tmp_path):
    from hubforge.services import free_port

    port = free_port()
    executor = ProcessInsteadOfJob(tmp_path, service_url=f"http://127.0.0.1:{port}/services/jobs/")
    executor.procs = {}
    server = HTTPServer(Application([(r"/services/jobs/api/runner/(\d{1,15})", RunnerReportHandler)],
                                    remote_executor=executor))
    server.listen(port, "127.0.0.1")
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    upgrade(engine)
    profile = ResolvedProfile(slug="default", display_name="Default")
    sched = Scheduler(sessions(engine), executor, JobsSettings(warm_kernels=False), tmp_path,
                      profile_for=lambda owner, slug: profile)
    yield sched, executor, port
    for proc in executor.procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    server.stop()
    engine.dispose()


def add_job(sched, nb, timeout=120) -> int:
    with sched.sessions() as s:
        job = Job(owner="remote-user", name="r", notebook_path="r.ipynb", notebook=nb, kernel="python3",
                  notebook_parameters=[], parameters={"n": 4}, profile="default", trigger={"type": "once"},
                  timeout=timeout, retries=0, retry_backoff=1.0, missed="run_once", notify=None, retention={},
                  paused=False)
        s.add(job)
        s.commit()
        return job.id


async def run(sched, job_id) -> Run:
    run_id = sched.queue_run(job_id, "manual").id
    sched.dispatch()
    await asyncio.wait_for(sched.running[run_id], 120)
    with sched.sessions() as s:
        return s.get(Run, run_id)


async def test_a_remote_run_reports_over_http_with_its_token(remote):
    sched, executor, _ = remote
    done = await run(sched, add_job(sched, notebook("print(n * 10)")))
    assert done.status == "succeeded", done.reason
    assert (done.progress_cell, done.progress_cells) == (3, 3)
    out = json.loads(sched.output_path(done.id).read_text())
    assert "40" in "".join(out["cells"][-1]["outputs"][0]["text"])
    assert executor.remote == {}  # the token is forgotten with the run


async def test_reports_need_the_runs_token(remote):
    sched, executor, port = remote
    job_id = add_job(sched, notebook("import time\ntime.sleep(30)"), timeout=60)
    run_id = sched.queue_run(job_id, "manual").id
    sched.dispatch()
    while run_id not in executor.remote:
        await asyncio.sleep(0.05)
    http = AsyncHTTPClient()
    url = f"http://127.0.0.1:{port}/services/jobs/api/runner/{run_id}"
    forged = {"event": "done", "status": "succeeded", "reason": "", "notebook": None}
    for headers, status in [({}, 403), ({"Authorization": "Bearer guessed"}, 403)]:
        with pytest.raises(HTTPClientError) as e:
            await http.fetch(url, method="POST", body=json.dumps(forged), headers=headers)
        assert e.value.code == status
    with pytest.raises(HTTPClientError) as e:  # the same answer: run ids are not revealed
        await http.fetch(f"http://127.0.0.1:{port}/services/jobs/api/runner/99999", method="POST",
                         body="{}", headers={"Authorization": "Bearer x"})
    assert e.value.code == 403
    assert sched.cancel(run_id, "tester")
    await asyncio.wait_for(sched.running[run_id], 30)
    with sched.sessions() as s:
        assert s.get(Run, run_id).status == "cancelled"  # the forged "succeeded" was refused
    assert executor.procs[run_id].poll() is not None


async def test_a_remote_run_that_dies_without_reporting_fails(remote):
    sched, executor, _ = remote
    job_id = add_job(sched, notebook("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"))
    run_id = sched.queue_run(job_id, "manual").id
    sched.dispatch()
    while run_id not in executor.procs:
        await asyncio.sleep(0.05)
    await asyncio.to_thread(executor.procs[run_id].wait, 60)  # the server answers meanwhile
    # what the Job watcher does when the Job has failed
    executor.remote[run_id][1].deliver(None)
    await asyncio.wait_for(sched.running[run_id], 30)
    with sched.sessions() as s:
        run_ = s.get(Run, run_id)
        assert run_.status == "failed" and "ended without a result" in run_.reason
