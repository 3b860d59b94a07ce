"""A run's output notebook as one self-contained HTML document, for the Jobs page.

The jobs service answers ``GET api/runs/<id>/output.html`` with
:func:`render_notebook_html`. The document is nbconvert's JupyterLab template with
everything that would reach the network taken out: no require.js, MathJax, Mermaid or
widget-manager script from a CDN, the CSS inlined, images as ``data:`` URLs. It is meant
to be served with ``Content-Security-Policy: sandbox`` (and shown in an
``<iframe sandbox>``), so no script in it runs: the outputs are therefore shown in their
static forms (HTML, SVG, PNG, text) before any that needs JavaScript, and LaTeX stays
as written.

The HTML of outputs is not sanitised: the sandbox is what keeps a notebook's scripts
from running on the hub's origin, and sanitising would also strip the styles of tables
and styled data frames that render fine without scripts.
"""

from __future__ import annotations

import copy
import threading
from pathlib import PurePosixPath

#: Output representations in the order they are preferred. Scripts never run in the
#: sandboxed page, so widget views and JavaScript outputs are left out: such an output
#: shows its static fallback (usually text) instead of an empty box.
DISPLAY_PRIORITY = [
    "text/html",
    "image/svg+xml",
    "image/png",
    "image/jpeg",
    "image/gif",
    "text/markdown",
    "text/latex",
    "text/plain",
]

# The lab template, minus every block that loads a script from a CDN, and minus the
# widget state at the end, which only a widget manager script would read.
_TEMPLATE_NAME = "hubforge-sandboxed.html.j2"
_TEMPLATE = """\
{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block footer -%}
</html>
{%- endblock footer -%}
"""

_exporter = None
# One exporter for the process: building it loads the templates and the lab CSS, which
# costs more than rendering a small notebook. Its preprocessors keep per-call state,
# so calls from several threads take turns.
_exporter_lock = threading.Lock()


def _get_exporter():
    global _exporter
    if _exporter is None:
        from jinja2 import DictLoader
        from nbconvert import HTMLExporter
        from traitlets.config import Config

        _exporter = HTMLExporter(
            config=Config({"NbConvertBase": {"display_data_priority": DISPLAY_PRIORITY}}),
            template_name="lab",
            template_file=_TEMPLATE_NAME,
            extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
        )
    return _exporter


def _notebook_node(nb: dict):
    """A version-4 notebook node from `nb` (left unchanged), with an id on every cell."""
    import nbformat
    from nbformat import versions
    from nbformat.reader import get_version

    major, minor = get_version(nb)
    if major not in versions:
        raise ValueError(f"not a valid notebook: unsupported nbformat version {major!r}")
    # As nbformat reads a file: multi-line sources and outputs saved as lists of lines
    # are joined, transient fields dropped.
    node = versions[major].to_notebook_json(copy.deepcopy(nb), minor=minor)
    if major != nbformat.v4.nbformat:
        node = nbformat.convert(node, nbformat.v4.nbformat)
    if node.get("nbformat_minor", 0) >= 5:
        # Cell ids are required from 4.5 on; a notebook written without them would make
        # nbformat warn on every render.
        for i, cell in enumerate(node.get("cells", [])):
            cell.setdefault("id", f"cell-{i}")
    return node


def render_notebook_html(nb: dict, title: str | None = None) -> str:
    """The notebook `nb` (nbformat JSON, as a dict) as a complete HTML document.

    `title` is the document's title; default: the notebook's ``title`` metadata, else
    the file name papermill recorded (``metadata.papermill.input_path``), else
    "Output notebook". The document loads nothing over the network; serve it with
    ``Content-Security-Policy: sandbox`` (see the module docstring). Raises
    :class:`ValueError` when `nb` is not a valid notebook.
    """
    import nbformat

    if not isinstance(nb, dict):
        raise ValueError(f"a notebook is a JSON object, not {type(nb).__name__}")
    try:
        node = _notebook_node(nb)
    except (nbformat.ValidationError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a valid notebook: {e}") from e
    if title is not None:
        node.metadata["title"] = title  # the template prefers it to the resources' name
    input_path = (node.metadata.get("papermill") or {}).get("input_path") or ""
    resources = {"metadata": {"name": PurePosixPath(input_path).stem or "Output notebook"}}
    with _exporter_lock:
        try:
            body, _ = _get_exporter().from_notebook_node(node, resources=resources)
        except nbformat.ValidationError as e:
            raise ValueError(f"not a valid notebook: {e.message}") from e
    return body
