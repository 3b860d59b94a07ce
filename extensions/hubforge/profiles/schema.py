"""JSON Schema (draft 2020-12) of a spawner-profile file.

The schema checks structure only: field names (``additionalProperties`` is
false everywhere, so a typo is an error, not a silently ignored key), types,
name patterns and simple bounds.  Rules that relate several fields (unique
slugs, one default, guarantee <= limit, parseable memory quantities,
compilable regexes) live in :mod:`hubforge.profiles.validate`, which also
turns jsonschema's messages into readable ones.

``OVERRIDE_SCHEMA`` is the subset an option's ``override`` may contain; the
resolver validates a user's merged result against it again.
"""

from __future__ import annotations

from typing import Any

SLUG_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
OPTION_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
# Choice slugs travel in form values and user_options; dots are allowed so that
# version-like slugs ("2026.11") work, a leading "-" is not, which keeps the
# form's "--unlisted" marker from ever colliding with a real choice.
CHOICE_SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
VOLUME_NAME_PATTERN = r"^[a-z0-9-]+$"
ABSOLUTE_PATH_PATTERN = r"^/"

#: How a pattern is explained to people, instead of printing the regex.
PATTERN_DESCRIPTIONS = {
    SLUG_PATTERN: "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
    OPTION_NAME_PATTERN: "must be lowercase letters, digits or '_', starting with a letter",
    CHOICE_SLUG_PATTERN: "must be letters, digits, '.', '_' or '-', starting with a letter or digit",
    ENV_NAME_PATTERN: "must be letters, digits or '_', not starting with a digit",
    VOLUME_NAME_PATTERN: "must be lowercase letters, digits or '-'",
    ABSOLUTE_PATH_PATTERN: "must be an absolute path (starting with '/')",
}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


_TEXT = {"type": "string", "minLength": 1}
_NAMES = {"type": "array", "items": _TEXT, "minItems": 1}
_CPU = {"type": "number", "exclusiveMinimum": 0}
# Integers are bytes; strings ("2G") are parsed by validate.py, which knows
# the unit conventions that a regex here would only duplicate.
_QUANTITY = {"type": ["integer", "string"], "exclusiveMinimum": 0, "minLength": 1}

_DEFS: dict[str, Any] = {
    "cpu": _object({"guarantee": _CPU, "limit": _CPU}),
    "memory": _object({"guarantee": _QUANTITY, "limit": _QUANTITY}),
    "toleration": _object(
        {
            "key": _TEXT,
            "operator": {"enum": ["Exists", "Equal"]},
            "value": {"type": "string"},
            "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
            "tolerationSeconds": {"type": "integer"},
        }
    ),
    "gpu": _object(
        {
            "count": {"type": "integer", "minimum": 0},
            "resource_name": _TEXT,
            "node_selector": {"type": "object", "additionalProperties": {"type": "string"}},
            "tolerations": {"type": "array", "items": {"$ref": "#/$defs/toleration"}},
        }
    ),
    "environment": {
        "type": "object",
        "propertyNames": {"pattern": ENV_NAME_PATTERN},
        "additionalProperties": {"type": "string"},
    },
    "volume": _object(
        {
            "name": {"type": "string", "pattern": VOLUME_NAME_PATTERN},
            "mount_path": {"type": "string", "pattern": ABSOLUTE_PATH_PATTERN},
            "host_path": {"type": "string", "pattern": ABSOLUTE_PATH_PATTERN},
            "claim_name": _TEXT,
            "read_only": {"type": "boolean"},
        },
        required=("name", "mount_path"),
    ),
    "volumes": {"type": "array", "items": {"$ref": "#/$defs/volume"}},
    "override": _object(
        {
            "image": _TEXT,
            "cpu": {"$ref": "#/$defs/cpu"},
            "memory": {"$ref": "#/$defs/memory"},
            "gpu": {"$ref": "#/$defs/gpu"},
            "environment": {"$ref": "#/$defs/environment"},
            "volumes": {"$ref": "#/$defs/volumes"},
        }
    ),
    "choice": _object(
        {
            "display_name": _TEXT,
            "default": {"type": "boolean"},
            "override": {"$ref": "#/$defs/override"},
        },
        required=("display_name",),
    ),
    "unlisted_choice": _object(
        {
            "enabled": {"type": "boolean"},
            "display_name": _TEXT,
            "validation_regex": _TEXT,
            "validation_message": _TEXT,
            "override": {"$ref": "#/$defs/override"},
        }
    ),
    "option": _object(
        {
            "display_name": _TEXT,
            "choices": {
                "type": "object",
                "propertyNames": {"pattern": CHOICE_SLUG_PATTERN},
                "additionalProperties": {"$ref": "#/$defs/choice"},
            },
            "unlisted_choice": {"$ref": "#/$defs/unlisted_choice"},
        },
        required=("display_name",),
    ),
    "profile": _object(
        {
            "slug": {"type": "string", "pattern": SLUG_PATTERN},
            "display_name": _TEXT,
            "description": {"type": "string"},
            "default": {"type": "boolean"},
            "image": _TEXT,
            "cpu": {"$ref": "#/$defs/cpu"},
            "memory": {"$ref": "#/$defs/memory"},
            "gpu": {"$ref": "#/$defs/gpu"},
            "environment": {"$ref": "#/$defs/environment"},
            "volumes": {"$ref": "#/$defs/volumes"},
            "allowed_users": _NAMES,
            "allowed_groups": _NAMES,
            "options": {
                "type": "object",
                "propertyNames": {"pattern": OPTION_NAME_PATTERN},
                "additionalProperties": {"$ref": "#/$defs/option"},
            },
        },
        required=("slug", "display_name"),
    ),
}

#: Schema of one profile file.
PROFILE_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://hubforge.invalid/schemas/spawner-profiles.json",
    "title": "HubForge spawner profiles",
    **_object(
        {"profiles": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/profile"}}},
        required=("profiles",),
    ),
    "$defs": _DEFS,
}

#: Schema of an option override, and of a user's merged resources.
OVERRIDE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$ref": "#/$defs/override",
    "$defs": _DEFS,
}
