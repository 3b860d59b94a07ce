"""The Publish widget: one click from a trained model in a notebook to a served endpoint.

``hubforge.models.PublishWidget(model, input_example=df)`` as a cell's last expression
shows a name, a description, an alias to point at the new version (none, ``staging``,
``production``) and a Publish button. Publishing shows its steps in a progress bar
(save in MLflow's format, upload, load on the service), then the endpoint's URL, the
version, and a ready-to-copy ``curl`` call with a ``$TOKEN`` placeholder (the token
itself is never shown). A refused publish shows the service's message in red and sets
``w.error``; nothing raises into the kernel.

Every action is the `hubforge.models` call a script would make (`publish`), so the
widget can be driven from Python, as the tests do::

    w = PublishWidget(pipeline, input_example=df, name="churn")
    w.publish_button.click()      # hubforge.publish(pipeline, name="churn", ...)
    w.result.version, w.result.url

Text from the user and the service is escaped before it becomes HTML.
"""

from __future__ import annotations

import html
import logging

from ..client import ServiceError
from .manager import ALIAS_NAME, MODEL_NAME_HELP, check_model_name

log = logging.getLogger(__name__)

_RED = "#c62828"
NO_ALIAS = "(none)"


class PublishWidget:
    """A controller owning the publish form's state; `widget` is what Jupyter displays."""

    def __init__(self, model, *, input_example, name: str = "", description: str = "", client=None):
        import ipywidgets as w

        self.model = model
        self.input_example = input_example
        self.client = client
        self.result = None
        self.error = ""
        self.name_text = w.Text(value=name, description="Name", placeholder="churn",
                                tooltip=MODEL_NAME_HELP)
        self.description_text = w.Text(value=description, description="Description")
        self.alias_choice = w.Dropdown(options=[NO_ALIAS, "staging", "production"], value=NO_ALIAS,
                                       description="Alias")
        self.publish_button = w.Button(description="Publish", button_style="primary", icon="cloud-upload")
        self.progress = w.IntProgress(value=0, min=0, max=3, description="", layout={"visibility": "hidden"})
        self.status = w.HTML()
        self.publish_button.on_click(lambda _: self.publish())
        self.widget = w.VBox([
            w.HTML("<b>Publish this model</b> as a served, versioned REST endpoint"),
            self.name_text, self.description_text, self.alias_choice,
            w.HBox([self.publish_button, self.progress]), self.status,
        ])

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _step(self, n: int, text: str) -> None:
        self.progress.value = n
        self.status.value = html.escape(text)

    def publish(self) -> None:
        from .client import publish

        self.error = ""
        name = self.name_text.value.strip()
        alias = None if self.alias_choice.value == NO_ALIAS else self.alias_choice.value
        try:
            check_model_name(name)
            if alias is not None and not ALIAS_NAME.match(alias):
                raise ValueError(f"alias {alias!r} is not allowed")
        except Exception as e:
            self._fail(getattr(e, "message", str(e)))
            return
        self.publish_button.disabled = True
        self.progress.layout.visibility = "visible"
        try:
            self.result = publish(self.model, name, input_example=self.input_example,
                                  description=self.description_text.value, alias=alias,
                                  progress=lambda n, total, text: self._step(n, text), client=self.client)
        except ServiceError as e:
            self._fail(f"{e.status}: {e.message}")
            return
        except Exception as e:  # saving failed: the model or its example
            log.debug("publish failed", exc_info=True)
            self._fail(f"{type(e).__name__}: {e}")
            return
        finally:
            self.publish_button.disabled = False
        r = self.result
        alias_note = f" (alias <code>{html.escape(alias)}</code>)" if alias else ""
        self.status.value = (
            f"<div>Version <b>{r.version}</b> of <b>{html.escape(r.name)}</b> is served{alias_note} at "
            f"<code>{html.escape(r.url)}</code></div>"
            f"<div>Call it (with a hub API token in <code>$TOKEN</code>):</div>"
            f"<pre style='white-space: pre-wrap'>{html.escape(r.curl)}</pre>"
        )

    def _fail(self, message: str) -> None:
        self.error = message
        self.progress.layout.visibility = "hidden"
        self.status.value = f"<span style='color: {_RED}'>{html.escape(message)}</span>"
