"""The Dask cluster widget and the ``%dask`` magic, on the session hub's real gateway.

The widget is driven through its Python model (slider values, ``button.click()``,
``refresh()``), the magic through a real IPython shell. Clusters are real scheduler
and worker processes: one or two small workers at a time (the machine has two cores),
and every test stops all of the user's clusters when it ends.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from IPython.core.error import UsageError

import hubforge.dask as hd
from hubforge.dask.magics import USAGE, DaskMagics
from hubforge.dask import disconnect
from hubforge.dask.widgets import ClusterWidget
from hubprocess import wait_for

pytestmark = pytest.mark.slow

#: Workers start as processes on a two-core machine: allow for a slow one.
WORKERS_TIMEOUT = 120


@pytest.fixture
def gateway_kwargs(dask_user):
    kwargs = dask_user["gateway_kwargs"]
    yield kwargs
    hd.shutdown(all=True, gateway_kwargs=kwargs)


@pytest.fixture
def make_widget(gateway_kwargs):
    made = []

    def make(**kwargs):
        kwargs.setdefault("autostart_poll", False)
        widget = ClusterWidget(gateway_kwargs=gateway_kwargs, **kwargs)
        made.append(widget)
        return widget

    yield make
    for widget in made:
        widget.close()
        widget.attach(None)  # closes its client; the fixture above stops the clusters


def _shows(widget, text):
    """Poll once; whether the status line shows `text`."""
    widget.refresh()
    return text in widget.status_html.value


def _names(gateway_kwargs):
    return [c["name"] for c in hd.list_clusters(gateway_kwargs=gateway_kwargs)]


def test_widget_start_compute_scale_and_stop(make_widget, gateway_kwargs):
    import dask.array as da

    w = make_widget()
    assert w.error == ""
    # The controls are bounded by the user's limits (the defaults: 8 workers, 2 cores, 4 GiB).
    assert (w.workers_slider.max, w.adaptive_range.max) == (8, 8)
    assert (w.cores_slider.min, w.cores_slider.max) == (1, 2)
    assert (w.memory_slider.min, w.memory_slider.max, w.memory_slider.step) == (0.25, 4.0, 0.25)
    assert w.scale_button.disabled and w.stop_button.disabled and not w.start_button.disabled

    # Two cores per worker: this cluster's limit is 4 workers (max_cores 8), under the slider's 8.
    w.workers_slider.value = 1
    w.cores_slider.value = 2
    w.memory_slider.value = 0.5
    w.start_button.click()
    assert w.error == ""
    assert w.client is not None and w.name == w.client.cluster.name
    assert w.name in _names(gateway_kwargs)
    assert w.cluster_dropdown.value == w.name
    assert w.start_button.disabled and w.cores_slider.disabled and not w.scale_button.disabled

    wait_for(lambda: _shows(w, "1 ready / 1 requested"), WORKERS_TIMEOUT, what="1 worker in the status")
    status = w.status_html.value
    assert w.name in status
    assert "2 cores, 512 MiB" in status
    assert "limit 4 workers" in status
    assert f'href="{w.client.dashboard_link}"' in status and 'target="_blank"' in status

    assert w.client.compute(da.ones((2000, 2000), chunks=500).sum()).result() == 4_000_000

    w.workers_slider.value = 2
    w.scale_button.click()
    assert w.error == ""
    wait_for(lambda: _shows(w, "2 ready / 2 requested"), WORKERS_TIMEOUT, what="2 workers in the status")
    assert "4 cores, 1 GiB" in w.status_html.value

    # Over this cluster's limit: refused with the limit in red on the error line, no traceback.
    w.workers_slider.value = 5
    w.scale_button.click()
    assert "limit of 4 workers" in w.error
    assert "limit" in w.error_html.value and "color" in w.error_html.value
    assert "Traceback" not in w.error_html.value
    assert _shows(w, "2 ready / 2 requested")  # unchanged

    # The next action that works clears the error line.
    w.adaptive_checkbox.value = True
    w.adaptive_range.value = (1, 2)
    w.scale_button.click()
    assert w.error == "" and w.error_html.value == ""

    name = w.name
    w.stop_button.click()
    assert w.error == ""
    assert w.client is None and w.name is None
    assert name not in _names(gateway_kwargs)
    w.refresh()
    assert f"Stopped cluster {name}" in w.status_html.value
    assert w.cluster_dropdown.options == (("New cluster", None),)
    assert not w.start_button.disabled and w.stop_button.disabled


def test_widget_reconnects_and_polls(make_widget, gateway_kwargs):
    # A cluster started elsewhere (another kernel): the widget lists it and attaches to it.
    other = hd.cluster(1, worker_cores=1, worker_memory=0.5, wait=False, gateway_kwargs=gateway_kwargs)
    name = other.cluster.name
    disconnect(other)

    w = make_widget(poll_interval=0.3, autostart_poll=True)
    assert w.polling
    assert name in [value for _label, value in w.cluster_dropdown.options]
    assert "1 running cluster" in w.status_html.value

    w.cluster_dropdown.value = name  # as a user's choice in the list
    assert w.error == ""
    assert w.name == name and w.client.cluster.name == name
    # The form shows the cluster's size; a running cluster's worker size is fixed.
    assert (w.cores_slider.value, w.memory_slider.value, w.workers_slider.value) == (1, 0.5, 1)
    assert w.cores_slider.disabled and w.memory_slider.disabled

    # The poll thread alone brings the status up to date.
    wait_for(lambda: "1 ready / 1 requested" in w.status_html.value, WORKERS_TIMEOUT,
             what="the poll thread to show 1 ready worker")
    assert w.client.submit(sum, [1, 2, 3]).result() == 6

    # Stopped from elsewhere: the widget notices and lets go.
    hd.shutdown(name, gateway_kwargs=gateway_kwargs)
    wait_for(lambda: f"Cluster {name} has stopped" in w.status_html.value, 30,
             what="the widget to notice the stopped cluster")
    assert w.name is None and w.client is None
    assert w.cluster_dropdown.value is None

    w.close()
    assert not w.polling


def test_widget_shows_a_refused_start(make_widget, gateway_kwargs):
    limits = hd.limits(gateway_kwargs=gateway_kwargs)
    started = [make_widget() for _ in range(limits["max_clusters"] + 1)]
    for w in started:
        w.workers_slider.value = 0
        w.memory_slider.value = 0.5
        w.start_button.click()
    *ok, refused = started
    assert all(w.error == "" and w.name for w in ok)
    assert refused.name is None and refused.client is None
    assert f"your limit is {limits['max_clusters']}" in refused.error
    assert "limit" in refused.error_html.value


def test_widget_choosing_a_cluster_that_just_stopped(make_widget, gateway_kwargs):
    other = hd.cluster(worker_memory=0.5, wait=False, gateway_kwargs=gateway_kwargs)
    name = other.cluster.name
    disconnect(other)
    w = make_widget()
    assert name in [value for _label, value in w.cluster_dropdown.options]
    hd.shutdown(name, gateway_kwargs=gateway_kwargs)

    w.cluster_dropdown.value = name  # listed by the last poll, gone since
    assert name in w.error and "color" in w.error_html.value
    assert w.name is None and w.client is None
    assert w.cluster_dropdown.value is None
    assert name not in [value for _label, value in w.cluster_dropdown.options]  # listed afresh


@pytest.fixture
def shell(shell, gateway_kwargs):
    """A shell whose ``%dask`` talks to the session hub's gateway as the Dask user."""
    ip = shell
    ip.register_magics(DaskMagics(shell=ip, gateway_kwargs=gateway_kwargs))
    yield ip
    client = ip.user_ns.pop("client", None)
    if client is not None:
        disconnect(client)


def test_magic_start_list_stop(shell, gateway_kwargs, capsys):
    client = shell.run_line_magic("dask", "start 1 --cores 1 --memory 0.5")
    assert shell.user_ns["client"] is client
    name = client.cluster.name
    assert client.submit(sum, [1, 2, 3]).result() == 6

    frame = shell.run_line_magic("dask", "list")
    assert list(frame["name"]) == [name]
    row = frame.iloc[0]
    # "workers" (ready) is the gateway's view, which may lag the scheduler's: not checked.
    assert (row["workers_requested"], row["worker_cores"], row["worker_memory"]) == (1, 1, "512 MiB")
    assert row["dashboard_link"] == client.dashboard_link

    assert shell.run_line_magic("dask", "limits")["max_workers"] == 8
    with pytest.raises(UsageError, match="over your limit of 8 workers"):
        shell.run_line_magic("dask", f"scale {name} 9")

    capsys.readouterr()
    shell.run_line_magic("dask", "stop --all")
    assert f"Stopped: {name}" in capsys.readouterr().out
    assert name not in _names(gateway_kwargs)
    assert client.status == "closed"  # the notebook's client let go of the stopped cluster

    assert shell.run_line_magic("dask", "list") is None
    assert capsys.readouterr().out == "No running clusters.\n"


def test_magic_refusals_are_usage_errors(shell):
    with pytest.raises(UsageError, match=r"required: NAME, N\nusage: %dask scale"):
        shell.run_line_magic("dask", "scale")
    with pytest.raises(UsageError, match="invalid choice: 'frobnicate'"):
        shell.run_line_magic("dask", "frobnicate")
    with pytest.raises(UsageError, match="not both"):
        shell.run_line_magic("dask", "start 2 --adaptive 1 3")
    with pytest.raises(UsageError, match="worker_cores=3 is over your limit"):
        shell.run_line_magic("dask", "start 1 --cores 3")
    with pytest.raises(UsageError, match="not found"):
        shell.run_line_magic("dask", "scale no-such-cluster 1")


def test_magic_help_prints_usage(shell, capsys):
    # No hub: help is printed before anything talks to a gateway.
    shell.register_magics(DaskMagics)
    for line in ("--help", "", "-h"):
        assert shell.run_line_magic("dask", line) is None
        assert capsys.readouterr().out == USAGE
    assert shell.run_line_magic("dask", "stop --help") is None
    assert "usage: %dask stop [-h] [--all] [NAME]" in capsys.readouterr().out


def test_magics_are_registered_and_import_light():
    code = (
        "import sys\n"
        "from hubforge.singleuser.magics import MAGICS\n"
        "from hubforge.dask.magics import DaskMagics\n"
        "assert DaskMagics in MAGICS\n"
        "heavy = {'dask', 'distributed', 'dask_gateway', 'ipywidgets', 'pandas'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
