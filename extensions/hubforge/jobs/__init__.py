"""Scheduled notebook jobs: papermill runs of a notebook on a schedule, once, or when a
file lands, executed by the hub's ``jobs`` service whether or not the user is logged in.

The notebook-side API (what ``import hubforge.jobs as jobs`` gives) calls the service
over REST with the server's token; docs/jobs.md has the whole story::

    import hubforge.jobs as jobs
    job = jobs.schedule(cron="0 6 * * *", parameters={"alpha": 0.5})
    run = jobs.run_now(job["id"])
    jobs.wait(run["id"])

The service itself is :mod:`hubforge.jobs.service` (REST API and Jobs page) over
:mod:`~hubforge.jobs.scheduler` (triggers, queue, runs), :mod:`~hubforge.jobs.executors`
(local processes, containers) and :mod:`~hubforge.jobs.runner` (one notebook run).
"""
