"""The spawn form: rendering from profiles, and parsing what it submits."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from hubforge.exceptions import OptionsError
from hubforge.profiles import load_profiles, parse_form, render_form, resolve, resources_summary

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shipped():
    return load_profiles([REPO / "spawner_profiles"])


@pytest.fixture(scope="module")
def full():
    return load_profiles([REPO / "tests" / "data" / "profiles" / "good"])


class Elements(HTMLParser):
    """Collects form elements by id, and what a browser would submit."""

    def __init__(self, html: str):
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._select: dict | None = None
        self._fieldset: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        attrs["_fieldset"] = self._fieldset
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.by_id[attrs["id"]] = attrs
        if tag == "fieldset":
            self._fieldset = attrs.get("data-profile-options")
        if tag == "select":
            self._select = attrs
            attrs["_options"] = []
        if tag == "option" and self._select is not None:
            self._select["_options"].append(attrs)

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        if tag == "fieldset":
            self._fieldset = None

    def submitted(self) -> dict[str, list[str]]:
        """Form data as a browser without JavaScript would send it."""
        data: dict[str, list[str]] = {}
        for tag, attrs in self.tags:
            name = attrs.get("name")
            if tag == "input" and attrs.get("type") == "radio" and "checked" in attrs:
                data.setdefault(name, []).append(attrs["value"])
            elif tag == "input" and attrs.get("type") == "text":
                data.setdefault(name, []).append(attrs.get("value") or "")
            elif tag == "select":
                options = attrs["_options"]
                chosen = next((o for o in options if "selected" in o), options[0])
                data.setdefault(name, []).append(chosen["value"])
        return data


def test_render_names_ids_and_defaults(shipped):
    html = render_form(shipped.for_user("bob", ["students"]))
    page = Elements(html)
    radios = [a for t, a in page.tags if t == "input" and a.get("type") == "radio"]
    assert [(r["id"], r["name"], r["value"]) for r in radios] == [
        ("profile-cpu-small", "profile", "cpu-small"),
        ("profile-cpu-large", "profile", "cpu-large"),
        ("profile-gpu-1", "profile", "gpu-1"),
    ]
    assert [r["value"] for r in radios if "checked" in r] == ["cpu-small"]
    assert "profile-cpu-xlarge" not in page.by_id

    select = page.by_id["profile-option-gpu-1--image"]
    assert select["name"] == "profile-option-gpu-1--image"
    assert [(o["value"], "selected" in o) for o in select["_options"]] == [
        ("2026.11", True),
        ("2026.08", False),
        ("--unlisted", False),
    ]
    text = page.by_id["profile-option-gpu-1--image--unlisted-choice"]
    assert text["name"] == "profile-option-gpu-1--image--unlisted-choice"
    assert text["pattern"] == "^hubforge/gpu:[0-9]{4}\\.[0-9]{2}(\\.[0-9]+)?$"
    assert text["title"] == "Must be a hubforge/gpu image, e.g. hubforge/gpu:2026.05"
    assert select["_fieldset"] == "gpu-1"
    assert "Other hubforge/gpu tag…" in html
    assert '<p class="card-text small mb-2 hubforge-resources">4–8 CPU · 16 GiB–32 GiB · 1 GPU</p>' in html


def test_resources_summary(shipped, full):
    assert resources_summary(shipped.get("cpu-small")) == "0.5–1 CPU · 1 GiB–2 GiB"
    assert resources_summary(full.get("everything")) == "1–2 CPU · 1 GiB–2 GiB · 2 GPUs"
    assert resources_summary(full.get("plain")) == ""


def test_render_escapes_admin_and_user_text(full):
    html = render_form(
        full.profiles,
        selected={"profile": "everything", "image--unlisted-choice": '"><script>x()</script>'},
        error="<img src=x onerror=alert(1)>",
    )
    assert "Everything &lt;b&gt;bold&lt;/b&gt; &amp; more" in html
    assert "<b>bold" not in html
    assert "Has it all: &quot;quotes&quot; and &lt;tags&gt;" in html
    assert "Other &lt;image&gt;…" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert "<script>x()" not in html
    page = Elements(html)
    assert page.by_id["hubforge-profile-error"]["role"] == "alert"
    # The refused value is shown again, with "Other…" selected.
    assert page.by_id["profile-option-everything--image--unlisted-choice"]["value"] == '"><script>x()</script>'
    select = page.by_id["profile-option-everything--image"]
    assert [o["value"] for o in select["_options"] if "selected" in o] == ["--unlisted"]


def test_render_preselects_a_refused_selection(shipped):
    page = Elements(render_form(shipped.profiles, {"profile": "cpu-large", "size": "high-memory"}))
    assert "checked" in page.by_id["profile-cpu-large"]
    assert "checked" not in page.by_id["profile-cpu-small"]
    size = page.by_id["profile-option-cpu-large--size"]
    assert [o["value"] for o in size["_options"] if "selected" in o] == ["high-memory"]
    # Other profiles keep their defaults.
    small = page.by_id["profile-option-cpu-small--size"]
    assert [o["value"] for o in small["_options"] if "selected" in o] == ["standard"]


def test_option_with_only_free_text_has_a_required_box(full):
    page = Elements(render_form(full.profiles))
    assert "profile-option-everything--tag" not in page.by_id
    assert "required" in page.by_id["profile-option-everything--tag--unlisted-choice"]


def test_submitting_the_defaults_resolves_like_no_options(shipped):
    page = Elements(render_form(shipped.for_user("bob", [])))
    options = parse_form(page.submitted())
    assert options == {"profile": "cpu-small", "size": "standard", "image": "2026.11"}
    assert resolve(shipped, options, "bob") == resolve(shipped, {}, "bob")


def test_parse_form_round_trip_non_default_profile_option_and_unlisted(shipped):
    formdata = {
        "_xsrf": ["token"],
        "profile": ["gpu-1"],
        "profile-option-gpu-1--image": ["--unlisted"],
        "profile-option-gpu-1--image--unlisted-choice": ["hubforge/gpu:2026.05"],
        # Fields of profiles not chosen are ignored.
        "profile-option-cpu-small--size": ["mini"],
        "profile-option-cpu-small--image--unlisted-choice": [""],
    }
    options = parse_form(formdata)
    assert options == {"profile": "gpu-1", "image--unlisted-choice": "hubforge/gpu:2026.05"}
    r = resolve(shipped, options, "bob")
    assert (r.slug, r.image, r.gpu_count) == ("gpu-1", "hubforge/gpu:2026.05", 1)

    options = parse_form(
        {
            "profile": ["cpu-large"],
            "profile-option-cpu-large--size": ["high-memory"],
            "profile-option-cpu-large--image": ["2026.08"],
            # Typed, but "Other…" was not picked: ignored.
            "profile-option-cpu-large--image--unlisted-choice": ["hubforge/cpu:2026.05"],
        }
    )
    assert options == {"profile": "cpu-large", "size": "high-memory", "image": "2026.08"}
    r = resolve(shipped, options, "bob")
    assert (r.image, r.mem_limit) == ("hubforge/cpu:2026.08", 32 * 1024**3)


def test_parse_form_other_without_text_is_an_error():
    with pytest.raises(OptionsError) as info:
        parse_form({"profile": ["p"], "profile-option-p--image": ["--unlisted"]})
    assert info.value.field == "image--unlisted-choice"


def test_parse_form_edge_cases():
    assert parse_form({}) == {}
    assert parse_form({"profile": [""]}) == {}
    # A longer slug sharing the prefix ("cpu" vs "cpu--big") is not mistaken
    # for an option of the shorter one.
    assert parse_form(
        {"profile": ["cpu"], "profile-option-cpu--size": ["s"], "profile-option-cpu--big--size": ["l"]}
    ) == {"profile": "cpu", "size": "s"}
    # Only a text box (no listed choices).
    assert parse_form({"profile": ["p"], "profile-option-p--tag--unlisted-choice": ["v1"]}) == {
        "profile": "p",
        "tag--unlisted-choice": "v1",
    }
