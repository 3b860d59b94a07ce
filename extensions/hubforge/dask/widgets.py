"""The cluster widget: size, start, scale and stop a Dask cluster, with live status.

``hubforge.dask.widget()`` as a cell's last expression shows it. `ClusterWidget` is a
controller that owns the state and builds standard ipywidgets: sliders for the number
of workers (or an adaptive range) and for each worker's cores and memory, bounded by
your limits (`hubforge.dask.limits`); Start, Scale and Stop buttons; a list of your
running clusters to attach to (from another kernel, say); a status line (workers
ready and requested, total cores and memory, the dashboard link); and an error line.

Every action is a call to the `hubforge.dask` function a script would make, so the
widget can be driven from Python, which is how the tests drive it::

    w = ClusterWidget()
    w.workers_slider.value = 2
    w.start_button.click()       # hubforge.dask.cluster(2, ...): w.client, w.name
    w.refresh()                  # one status poll (a thread also polls every 2 s)
    w.workers_slider.value = 4
    w.scale_button.click()       # hubforge.dask.scale(w.name, 4)
    w.stop_button.click()        # hubforge.dask.shutdown(w.name)
    w.close()                    # stops polling; the cluster keeps running

A refused request (over a limit, say) shows its message in red on the error line and
leaves ``w.error`` set to it; it never raises into the kernel. Names and messages from
the gateway are escaped before they become HTML. Where ipywidgets is missing the
widget shows its status as HTML (``refresh``, ``attach`` and ``stop`` still work;
size clusters with `hubforge.dask.cluster` and `hubforge.dask.scale` instead).
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading
from typing import Any

from .. import dask as hdask
from . import DaskError
from .settings import format_memory

log = logging.getLogger(__name__)

GiB = 2**30


class ClusterWidget:
    """Start, scale, stop and watch one of your Dask clusters.

    `gateway_kwargs` go to `dask_gateway.Gateway` (the environment configures it in a
    notebook). The status is polled every `poll_interval` seconds by a daemon thread,
    started with the widget unless `autostart_poll` is False; `refresh` polls once,
    `close` stops polling.

    State (read it): ``client`` (the `distributed.Client` of the attached cluster, or
    None), ``name`` (that cluster's name), ``clusters`` (your running clusters, as
    `hubforge.dask.list_clusters` gives them), ``limits`` (`hubforge.dask.limits`, or
    None if they could not be read), ``scheduler`` (the attached scheduler's worker
    totals: workers, threads, memory), ``error`` (the last action's failure, or "").
    """

    def __init__(self, gateway_kwargs: dict | None = None, poll_interval: float = 2.0,
                 autostart_poll: bool = True) -> None:
        self.gateway_kwargs = dict(gateway_kwargs or {})
        self.poll_interval = poll_interval
        self.client: Any = None
        self.name: str | None = None
        self.clusters: list[dict[str, Any]] = []
        self.limits: dict[str, Any] | None = None
        self.error = ""
        self.notice = ""
        self.poll_error = ""
        self.scheduler: dict[str, Any] | None = None
        # Polls and button callbacks run on different threads; one at a time.
        self._lock = threading.RLock()
        # The thread now setting widget values from the state: its change events are
        # echoes, not a user's choice (another thread's are).
        self._syncing_thread: int | None = None
        self._stop_polling = threading.Event()
        self._thread: threading.Thread | None = None
        self.box: Any = None
        self._guard(self._read_limits)
        self._build()
        self.refresh()
        if autostart_poll:
            self.start_polling()

    # --- actions (the buttons call these) ------------------------------------------------

    def start(self) -> None:
        """Start a cluster sized as the controls say, and attach to it."""
        self._need_controls()
        if self.name is not None:
            raise DaskError(f"this widget is attached to cluster {self.name}; stop it, "
                            "or choose 'New cluster' in the list first")
        size = {"worker_cores": self.cores_slider.value, "worker_memory": self.memory_slider.value}
        if self.adaptive_checkbox.value:
            client = hdask.cluster(adaptive=tuple(self.adaptive_range.value), wait=False,
                                   gateway_kwargs=self.gateway_kwargs, **size)
        else:
            client = hdask.cluster(self.workers_slider.value, wait=False,
                                   gateway_kwargs=self.gateway_kwargs, **size)
        self._attach(client)

    def scale(self) -> None:
        """Apply the workers slider (or the adaptive range) to the attached cluster."""
        self._need_controls()
        name = self._attached()
        if self.adaptive_checkbox.value:
            minimum, maximum = self.adaptive_range.value
            hdask.adapt(name, minimum, maximum, gateway_kwargs=self.gateway_kwargs)
        else:
            hdask.scale(name, self.workers_slider.value, gateway_kwargs=self.gateway_kwargs)

    def stop(self) -> None:
        """Shut the attached cluster down and forget it."""
        name = self._attached()
        self._release()
        hdask.shutdown(name, gateway_kwargs=self.gateway_kwargs)
        self.notice = f"Stopped cluster {name}."

    def attach(self, name: str | None) -> None:
        """Attach to your running cluster `name` (a new client), or detach with None.

        Detaching closes this widget's client; the cluster keeps running.
        """
        if name == self.name:
            return
        self._release()
        if name is not None:
            self._attach(hdask.connect(name, gateway_kwargs=self.gateway_kwargs))

    def refresh(self) -> None:
        """Read your clusters once and update the status (the poll thread's body)."""
        with self._lock:
            try:
                self.clusters = hdask.list_clusters(gateway_kwargs=self.gateway_kwargs)
                self.poll_error = ""
            except Exception as exc:
                if not isinstance(exc, DaskError):
                    log.warning("Reading the Dask clusters failed", exc_info=True)
                self.poll_error = _message(exc)
            else:
                if self.name is not None and self._current() is None:
                    gone = self.name
                    self._release()
                    self.notice = f"Cluster {gone} has stopped."
            self.scheduler = self._read_scheduler()
            self._sync()

    def _read_scheduler(self) -> dict[str, Any] | None:
        """The attached scheduler's own worker totals, or None.

        The gateway counts a worker as ready only after the scheduler's next heartbeat
        to it (seconds later); the scheduler knows at once.
        """
        client = self.client
        # A client that lost its scheduler would wait for a connection timeout.
        if client is None or client.status != "running":
            return None
        try:
            info = client.scheduler_info(n_workers=0)
            return {"workers": info["n_workers"], "threads": info["total_threads"],
                    "memory": info["total_memory"]}
        except Exception:
            log.debug("Reading the scheduler's worker totals failed", exc_info=True)
            return None

    # --- polling -------------------------------------------------------------------------

    def start_polling(self) -> None:
        """Poll the status every ``poll_interval`` seconds in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop_polling.clear()
        self._thread = threading.Thread(target=self._poll, name="hubforge-dask-widget", daemon=True)
        self._thread.start()

    def stop_polling(self, timeout: float = 10.0) -> None:
        """Stop the poll thread (waits up to `timeout` seconds for a poll in flight)."""
        self._stop_polling.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    @property
    def polling(self) -> bool:
        """Whether the poll thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def _poll(self) -> None:
        while not self._stop_polling.wait(self.poll_interval):
            try:
                self.refresh()
            except Exception:  # refresh reports its own failures; this is a bug
                log.exception("The Dask widget's status poll failed")

    def close(self) -> None:
        """Stop polling and close the widgets. The cluster and ``client`` stay as they are."""
        self.stop_polling()
        if self.box is not None:
            _close_tree(self.box)

    # --- internals -----------------------------------------------------------------------

    def _read_limits(self) -> None:
        self.limits = hdask.limits(gateway_kwargs=self.gateway_kwargs)

    def _attach(self, client: Any) -> None:
        self.client = client
        self.name = client.cluster.name
        self.notice = ""
        current = self._current()
        if current is None:  # not in the last poll: read the list again
            self.clusters = hdask.list_clusters(gateway_kwargs=self.gateway_kwargs)
            current = self._current()
        if current is not None and self.box is not None:
            with self._syncing():
                self.adaptive_checkbox.value = bool(current.get("adaptive"))
                self.workers_slider.value = min(current.get("workers_requested") or 0, self.workers_slider.max)
                self.cores_slider.value = int(current.get("worker_cores") or 1)
                self.memory_slider.value = (current.get("worker_memory") or GiB) / GiB

    def _release(self) -> None:
        """Close this widget's client (and its gateway connection), not the cluster."""
        client, self.client, self.name, self.scheduler = self.client, None, None, None
        if client is not None:
            hdask.disconnect(client)

    def _need_controls(self) -> None:
        if self.box is None:
            raise DaskError("the cluster widget's controls need ipywidgets; without it, use "
                            "hubforge.dask.cluster, scale and adapt")

    def _attached(self) -> str:
        if self.name is None:
            raise DaskError("no cluster: start one, or choose a running cluster in the list")
        return self.name

    def _current(self) -> dict[str, Any] | None:
        return next((c for c in self.clusters if c["name"] == self.name), None)

    def _guard(self, action: Any, *args: Any) -> Any:
        """Run an action; show its failure on the error line instead of raising."""
        with self._lock:
            self.error = ""
            try:
                return action(*args)
            except Exception as exc:
                if not isinstance(exc, DaskError):
                    log.exception("Dask widget action %s failed", getattr(action, "__name__", action))
                self.error = _message(exc)
                return None
            finally:
                self._sync()

    # --- the widgets ---------------------------------------------------------------------

    def _build(self) -> None:
        try:
            from ipywidgets import (HTML, Button, Checkbox, Dropdown, FloatSlider, HBox,
                                    IntRangeSlider, IntSlider, Layout, VBox)
        except ImportError:
            return
        lim = self.limits or {}
        max_workers = int(lim.get("max_workers") or 1)
        max_cores = max(1, int(lim.get("worker_cores") or 1))
        max_memory = max(0.25, (lim.get("worker_memory") or GiB) / GiB)
        wide = {"description_width": "9em"}
        self.cluster_dropdown = Dropdown(description="Cluster", options=[("New cluster", None)],
                                         value=None, style=wide, layout=Layout(width="32em"))
        self.workers_slider = IntSlider(value=min(2, max_workers), min=0, max=max_workers,
                                        description="Workers", style=wide)
        self.adaptive_checkbox = Checkbox(value=False, description="Adaptive", indent=False)
        self.adaptive_range = IntRangeSlider(value=(min(1, max_workers), max_workers), min=0,
                                             max=max_workers, description="Adaptive range",
                                             disabled=True, style=wide)
        self.cores_slider = IntSlider(value=1, min=1, max=max_cores,
                                      description="Cores / worker", style=wide)
        self.memory_slider = FloatSlider(value=min(2.0, max_memory), min=0.25, max=max_memory,
                                         step=0.25, description="GiB / worker", style=wide)
        self.start_button = Button(description="Start", icon="play", button_style="success",
                                   tooltip="Start a cluster of this size")
        self.scale_button = Button(description="Scale", icon="arrows-alt-h",
                                   tooltip="Apply the workers (or adaptive range) to the cluster")
        self.stop_button = Button(description="Stop", icon="stop", button_style="danger",
                                  tooltip="Shut the cluster down")
        self.status_html = HTML()
        self.error_html = HTML()
        self.cluster_dropdown.observe(self._on_select, names="value")
        self.adaptive_checkbox.observe(self._on_adaptive, names="value")
        self.start_button.on_click(lambda _b: self._guard(self.start))
        self.scale_button.on_click(lambda _b: self._guard(self.scale))
        self.stop_button.on_click(lambda _b: self._guard(self.stop))
        self.box = VBox([
            self.cluster_dropdown,
            HBox([self.workers_slider, self.adaptive_checkbox]),
            self.adaptive_range,
            self.cores_slider,
            self.memory_slider,
            HBox([self.start_button, self.scale_button, self.stop_button]),
            self.status_html,
            self.error_html,
        ])

    def _sync(self) -> None:
        """Make the widgets show the state."""
        if self.box is None:
            return
        with self._syncing():
            options = [("New cluster", None)] + [(c["name"], c["name"]) for c in self.clusters]
            if self.name is not None and self._current() is None:
                options.append((self.name, self.name))
            if list(self.cluster_dropdown.options) != options:
                self.cluster_dropdown.options = options
            self.cluster_dropdown.value = self.name
            attached = self.name is not None
            usable = self.limits is not None
            self.start_button.disabled = attached or not usable
            self.scale_button.disabled = self.stop_button.disabled = not attached
            # A running cluster's workers keep the size it started with.
            self.cores_slider.disabled = self.memory_slider.disabled = attached
            adaptive = self.adaptive_checkbox.value
            self.workers_slider.disabled, self.adaptive_range.disabled = adaptive, not adaptive
            self.status_html.value = self._status_html()
            self.error_html.value = (
                f"<span style='color:#c62828'>{html.escape(self.error)}</span>" if self.error else "")

    @contextlib.contextmanager
    def _syncing(self):
        self._syncing_thread = threading.get_ident()
        try:
            yield
        finally:
            self._syncing_thread = None

    def _echo(self) -> bool:
        return self._syncing_thread == threading.get_ident()

    def _status_html(self) -> str:
        lines = []
        current = self._current()
        if self.name is None:
            running = len(self.clusters)
            lines.append(f"<i>No cluster attached</i>: start one, or choose one of your "
                         f"{running} running cluster{'s' if running != 1 else ''} above."
                         if running else "<i>No cluster attached</i>: start one.")
        elif current is None:
            lines.append(f"Cluster <code>{html.escape(self.name)}</code>: waiting for its status")
        else:
            lines.append(_cluster_html(current, self.scheduler))
        if self.notice:
            lines.append(html.escape(self.notice))
        if self.poll_error:
            lines.append(f"<span style='color:#c62828'>Status unavailable: "
                         f"{html.escape(self.poll_error)}</span>")
        return "<div class='hubforge-dask-status'>" + "<br>".join(lines) + "</div>"

    def _on_select(self, change: dict[str, Any]) -> None:
        if not self._echo():
            self._guard(self.attach, change["new"])
            if self.error:  # most likely the list is out of date
                self.refresh()

    def _on_adaptive(self, change: dict[str, Any]) -> None:
        if not self._echo():
            with self._lock:
                self._sync()

    # --- display -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<ClusterWidget cluster={self.name or 'none'} running={len(self.clusters)}>"

    def _repr_html_(self) -> str:
        error = f"<br><span style='color:#c62828'>{html.escape(self.error)}</span>" if self.error else ""
        return f"<p><b>Dask</b></p>{self._status_html()}{error}"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        if self.box is not None:
            return self.box._repr_mimebundle_(**kwargs)
        return {"text/plain": repr(self), "text/html": self._repr_html_()}


def _cluster_html(c: dict[str, Any], scheduler: dict[str, Any] | None) -> str:
    requested = c.get("workers_requested") or 0
    if scheduler is not None:
        ready, cores, memory = scheduler["workers"], scheduler["threads"], scheduler["memory"]
    else:
        ready = c.get("workers") or 0
        cores = ready * (c.get("worker_cores") or 0)
        memory = ready * (c.get("worker_memory") or 0)
    mode = " (adaptive)" if c.get("adaptive") else ""
    text = (
        f"Cluster <code>{html.escape(c['name'])}</code> {html.escape(str(c.get('status', '')).lower())}"
        f" · Workers: {ready} ready / {requested} requested{mode}"
        f" · {cores:g} cores, {format_memory(memory) if memory else '0 GiB'}"
    )
    if c.get("max_workers") is not None:
        text += f" · limit {c['max_workers']} workers"
    if c.get("dashboard_link"):
        link = html.escape(c["dashboard_link"], quote=True)
        text += f" · <a href=\"{link}\" target=\"_blank\" rel=\"noopener noreferrer\">Dashboard</a>"
    return text


def _close_tree(widget: Any) -> None:
    for child in getattr(widget, "children", ()):
        _close_tree(child)
    widget.close()


def _message(exc: Exception) -> str:
    return str(exc) if isinstance(exc, DaskError) else f"{type(exc).__name__}: {exc}"
