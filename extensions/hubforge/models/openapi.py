"""The OpenAPI description of a served model, generated from its MLflow signature."""

from __future__ import annotations

from .signature import InputSchema


def openapi(name: str, version: int, signature: dict | None, base: str) -> dict:
    """OpenAPI 3.1 for ``POST <base>/predict`` of model `name` (version `version`)."""
    schema = InputSchema((signature or {}).get("inputs"))
    record = schema.json_schema() if signature else {"type": "object"}
    example = schema.example_row() if signature else {}
    if schema.tensor is not None:
        body = {"type": "object", "required": ["inputs"],
                "properties": {"inputs": {"type": "array", "items": record}}}
        example_body = {"inputs": [example]}
    else:
        body = {"type": "object", "properties": {
            "dataframe_records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}},
            "dataframe_split": {"type": "object", "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array"}}}},
            "columns": {"type": "object", "additionalProperties": {"type": "array"}},
        }}
        example_body = {"dataframe_records": [example]}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Model {name}", "version": str(version),
                 "description": "Served by HubForge. Authenticate with a hub API token: "
                                "'Authorization: token <token>'."},
        "servers": [{"url": base}],
        "components": {
            "securitySchemes": {"hubToken": {"type": "apiKey", "in": "header", "name": "Authorization"}},
            "schemas": {
                "Record": record,
                "Error": {"type": "object", "properties": {"status": {"type": "integer"},
                                                           "message": {"type": "string"}}},
            },
        },
        "security": [{"hubToken": []}],
        "paths": {
            "/predict": {"post": {
                "summary": f"Predict with model {name}",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": body, "example": example_body}}},
                "responses": {
                    "200": {"description": "One prediction per input row", "content": {"application/json": {
                        "schema": {"type": "object", "properties": {"predictions": {"type": "array"}}}}}},
                    "400": {"description": "The input does not match the model's signature", **error},
                    "401": {"description": "No hub token", **error},
                    "403": {"description": "The token lacks the invoke scope", **error},
                    "404": {"description": "No such model (or not yours)", **error},
                    "422": {"description": "The model raised an error on this input", **error},
                    "502": {"description": "The model's process failed", **error},
                },
            }},
            "/health": {"get": {"summary": "Whether the version is loaded",
                                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        },
    }
