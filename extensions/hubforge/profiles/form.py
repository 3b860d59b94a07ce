"""The spawn-page form built from profiles, and parsing of what it submits.

:func:`render_form` returns an HTML fragment that JupyterHub places inside
its own ``<form>`` on the spawn page (Bootstrap 5 classes, as in
JupyterHub 5).  Field names follow KubeSpawner so that clients written for
it work unchanged:

* ``profile`` - radio buttons, value = profile slug (id ``profile-{slug}``);
* ``profile-option-{slug}--{option}`` - a select of the option's choices
  (same id), with the extra value ``--unlisted`` for "Other…" when the
  option has an enabled unlisted choice;
* ``profile-option-{slug}--{option}--unlisted-choice`` - the free-text box.

:func:`parse_form` turns the submitted fields into ``user_options`` in the
REST shape that :func:`hubforge.profiles.resolve.resolve` validates.  The
form's script only improves the page (it disables the other profiles'
fields and shows the text box when "Other…" is picked); without it,
parsing still takes just the chosen profile's fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from ..exceptions import OptionsError
from .model import Profile, ProfileOption, effective_default, format_bytes, format_number
from .resolve import UNLISTED_SUFFIX

#: Select value meaning "use the text box", never a valid choice slug.
UNLISTED_VALUE = "--unlisted"

# An option name (schema.OPTION_NAME_PATTERN), optionally with the suffix.
_OPTION_KEY = re.compile(r"[a-z][a-z0-9_]*(?:--unlisted-choice)?")

# Static: no profile data is ever interpolated into the script.
_SCRIPT = """
<script>
(function () {
  var root = document.getElementById("hubforge-profiles");
  if (!root) { return; }
  function sync() {
    root.querySelectorAll("fieldset[data-profile-options]").forEach(function (fs) {
      var radio = document.getElementById("profile-" + fs.getAttribute("data-profile-options"));
      fs.disabled = !(radio && radio.checked);
    });
    root.querySelectorAll("select[data-has-unlisted]").forEach(function (select) {
      var text = document.getElementById(select.id + "--unlisted-choice");
      var other = select.value === "--unlisted";
      // Disabled, not just hidden: a hidden box with a stale invalid value
      // would still block the submit through constraint validation.
      text.hidden = !other;
      text.disabled = !other;
      text.required = other;
    });
  }
  root.addEventListener("change", sync);
  sync();
})();
</script>
"""


def _range(guarantee: float | int | None, limit: float | int | None, fmt) -> str | None:
    if guarantee is not None and limit is not None:
        return fmt(limit) if guarantee == limit else f"{fmt(guarantee)}–{fmt(limit)}"
    if limit is not None:
        return f"up to {fmt(limit)}"
    if guarantee is not None:
        return f"at least {fmt(guarantee)}"
    return None


def resources_summary(profile: Profile) -> str:
    """A one-line summary such as ``"1–2 CPU · 2 GiB–4 GiB · 1 GPU"``."""
    parts = []
    cpu = _range(profile.cpu.guarantee, profile.cpu.limit, format_number)
    if cpu:
        parts.append(f"{cpu} CPU")
    memory = _range(profile.memory.guarantee, profile.memory.limit, format_bytes)
    if memory:
        parts.append(memory)
    if profile.gpu is not None and profile.gpu.count:
        parts.append(f"{profile.gpu.count} GPU" + ("s" if profile.gpu.count > 1 else ""))
    return " · ".join(parts)


def _option_html(profile: Profile, option: ProfileOption, selected: Mapping[str, Any]) -> str:
    field_id = f"profile-option-{profile.slug}--{option.name}"
    text_id = field_id + UNLISTED_SUFFIX
    unlisted_text = selected.get(option.name + UNLISTED_SUFFIX) or ""
    chosen = selected.get(option.name) or option.default_choice
    use_unlisted = option.unlisted_enabled and (bool(unlisted_text) or not option.choices)

    html = [f'<div class="mb-2 hubforge-option" data-option="{escape(option.name)}">']
    html.append(f'<label class="form-label" for="{escape(field_id)}">{escape(option.display_name)}</label>')
    if option.choices:
        has_unlisted = " data-has-unlisted" if option.unlisted_enabled else ""
        html.append(
            f'<select class="form-select" name="{escape(field_id)}" id="{escape(field_id)}"{has_unlisted}>'
        )
        for slug, choice in option.choices.items():
            mark = " selected" if slug == chosen and not use_unlisted else ""
            html.append(f'<option value="{escape(slug)}"{mark}>{escape(choice.display_name)}</option>')
        if option.unlisted_enabled:
            assert option.unlisted is not None
            mark = " selected" if use_unlisted else ""
            html.append(
                f'<option value="{UNLISTED_VALUE}"{mark}>{escape(option.unlisted.display_name)}…</option>'
            )
        html.append("</select>")
    if option.unlisted_enabled:
        assert option.unlisted is not None
        attrs = [
            'type="text"',
            'class="form-control mt-1"',
            f'name="{escape(text_id)}"',
            f'id="{escape(text_id)}"',
            f'value="{escape(unlisted_text)}"',
            f'placeholder="{escape(option.unlisted.display_name)}"',
            f'aria-label="{escape(option.unlisted.display_name)}"',
        ]
        if option.unlisted.validation_regex:
            attrs.append(f'pattern="{escape(option.unlisted.validation_regex)}"')
            message = option.unlisted.validation_message or f"Must match {option.unlisted.validation_regex}"
            attrs.append(f'title="{escape(message)}"')
        if not option.choices:
            attrs.append("required")
        # Otherwise the script hides the box until "Other…" is picked; without
        # the script it stays visible and parse_form uses it only for "Other…".
        html.append(f"<input {' '.join(attrs)}>")
    html.append("</div>")
    return "\n".join(html)


def _profile_html(profile: Profile, checked: bool, selected: Mapping[str, Any]) -> str:
    slug = escape(profile.slug)
    html = [
        f'<div class="card mb-3 hubforge-profile" data-profile="{slug}">',
        '<div class="card-body">',
        '<div class="form-check">',
        f'<input class="form-check-input" type="radio" name="profile" id="profile-{slug}" '
        f'value="{slug}"{" checked" if checked else ""}>',
        f'<label class="form-check-label fw-bold" for="profile-{slug}">'
        f"{escape(profile.display_name)}</label>",
        "</div>",
    ]
    if profile.description:
        html.append(f'<p class="card-text text-body-secondary mb-1">{escape(profile.description)}</p>')
    summary = resources_summary(profile)
    if summary:
        html.append(f'<p class="card-text small mb-2 hubforge-resources">{escape(summary)}</p>')
    if profile.options:
        html.append(f'<fieldset class="hubforge-options" data-profile-options="{slug}">')
        own = selected if checked else {}
        html += [_option_html(profile, option, own) for option in profile.options.values()]
        html.append("</fieldset>")
    html += ["</div>", "</div>"]
    return "\n".join(html)


def render_form(
    profiles: Sequence[Profile], selected: Mapping[str, Any] | None = None, error: str | None = None
) -> str:
    """The spawn form for ``profiles`` (already filtered for the user).

    ``selected`` is a ``user_options`` dict to pre-fill (for instance the
    one just refused), ``error`` a message shown above the profiles.  The
    default profile and each option's default choice are pre-selected
    otherwise.  All profile text is HTML-escaped.
    """
    selected = dict(selected or {})
    chosen = next((p for p in profiles if p.slug == selected.get("profile")), None)
    if chosen is None:
        chosen = effective_default(list(profiles))
        selected = {}
    html = ['<div class="hubforge-profiles" id="hubforge-profiles">']
    if error:
        html.append(
            f'<div class="alert alert-danger" role="alert" id="hubforge-profile-error">{escape(error)}</div>'
        )
    html += [_profile_html(p, p is chosen, selected) for p in profiles]
    html.append("</div>")
    html.append(_SCRIPT.strip())
    return "\n".join(html)


def _first(formdata: Mapping[str, Sequence[str]], key: str) -> str:
    values = formdata.get(key) or [""]
    return values[0] if isinstance(values, (list, tuple)) else str(values)


def parse_form(formdata: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Convert JupyterHub's form data (name -> list of strings) to ``user_options``.

    Only the chosen profile's fields are kept.  Picking "Other…" makes the
    text box's content the ``"<option>--unlisted-choice"`` value; leaving it
    empty is an :class:`~hubforge.exceptions.OptionsError`.  Names and
    values are checked later, by :func:`~hubforge.profiles.resolve.resolve`.
    """
    slug = _first(formdata, "profile")
    if not slug:
        return {}
    options: dict[str, str] = {"profile": slug}
    prefix = f"profile-option-{slug}--"
    choices: dict[str, str] = {}
    texts: dict[str, str] = {}
    for key in formdata:
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        # The pattern check also drops fields of a profile whose slug merely
        # starts with this one ("cpu" vs "cpu--big").
        if rest is None or not _OPTION_KEY.fullmatch(rest):
            continue
        if rest.endswith(UNLISTED_SUFFIX):
            texts[rest[: -len(UNLISTED_SUFFIX)]] = _first(formdata, key)
        else:
            choices[rest] = _first(formdata, key)
    for name in dict.fromkeys([*choices, *texts]):
        choice, text = choices.get(name), texts.get(name, "")
        if choice == UNLISTED_VALUE:
            if not text:
                raise OptionsError(name + UNLISTED_SUFFIX, "enter a value, or pick one of the listed choices")
            options[name + UNLISTED_SUFFIX] = text
        elif choice:
            options[name] = choice
        elif text:
            # An option with no listed choices has only the text box.
            options[name + UNLISTED_SUFFIX] = text
    return options
