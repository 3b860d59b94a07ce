"""The jobs service's REST API as an OpenAPI 3.1 document (``GET api/openapi.json``).

Written here, next to the handlers, rather than generated: tornado has no schema layer
to generate it from. tests/test_jobs_service.py checks that every route the service
serves is described and every described route is served.
"""

from __future__ import annotations

from .db import STATUSES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _answer(description: str, schema=None, content_type: str = "application/json") -> dict:
    answer: dict = {"description": description}
    if schema is not None:
        answer["content"] = {content_type: {"schema": schema}}
    return answer


def _errors(*codes: int) -> dict:
    text = {400: "invalid input: the message names the field", 401: "no or invalid token",
            403: "the token lacks a scope (named in the message)", 404: "no such job or run (or not yours)",
            409: "conflicts with the current state"}
    return {str(code): _answer(text[code], _ERROR) for code in codes}


def _op(summary: str, scope: str | None, responses: dict, *, body=None, params=None, tag: str = "jobs") -> dict:
    op: dict = {"summary": summary, "tags": [tag], "responses": responses}
    if scope:
        op["security"] = [{"hubToken": [scope]}]
        op["description"] = f"Needs the scope `custom:hubforge:jobs:{scope}`."
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def openapi_document(prefix: str = "/services/jobs/") -> dict:
    job, run = {"$ref": "#/components/schemas/Job"}, {"$ref": "#/components/schemas/Run"}
    job_id, run_id = _path_param("job_id"), _path_param("run_id")
    limit = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, "most runs to return")
    all_users = _query("all", {"type": "string", "enum": ["1"]}, "admins: everyone's")
    paths = {
        "/api/jobs": {
            "get": _op("Your jobs", "read", {"200": _answer("the jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": job}}}), **_errors(401, 403)}, params=[all_users]),
            "post": _op("Create a job", "write", {"201": _answer("the job", job), **_errors(400, 401, 403, 409)}, body={"$ref": "#/components/schemas/JobRequest"}),
        },
        "/api/jobs/{job_id}": {
            "get": _op("One job", "read", {"200": _answer("the job", job), **_errors(401, 403, 404)}, params=[job_id]),
            "patch": _op("Change a job", "write", {"200": _answer("the job", job), **_errors(400, 401, 403, 404, 409)}, params=[job_id], body={"$ref": "#/components/schemas/JobRequest"}),
            "delete": _op("Delete a job, its runs and outputs", "write", {"204": _answer("deleted"), **_errors(401, 403, 404)}, params=[job_id]),
        },
        "/api/jobs/{job_id}/pause": {"post": _op("Pause a job's trigger", "write", {"200": _answer("the job", job), **_errors(401, 403, 404)}, params=[job_id])},
        "/api/jobs/{job_id}/resume": {"post": _op("Resume a job's trigger", "write", {"200": _answer("the job", job), **_errors(401, 403, 404)}, params=[job_id])},
        "/api/jobs/{job_id}/runs": {
            "get": _op("A job's runs, newest first", "read", {"200": _answer("the runs", {"type": "object", "properties": {"runs": {"type": "array", "items": run}}}), **_errors(401, 403, 404)}, params=[job_id, limit]),
            "post": _op("Run a job now", "write", {"201": _answer("the run", run), **_errors(400, 401, 403, 404)}, params=[job_id],
                        body={"type": "object", "properties": {"parameters": {"type": "object"}}, "additionalProperties": False}),
        },
        "/api/runs": {"get": _op("Your runs, newest first", "read", {"200": _answer("the runs", {"type": "object", "properties": {"runs": {"type": "array", "items": run}}}), **_errors(400, 401, 403)},
                                 params=[_query("job", {"type": "integer"}, "one job's"), _query("status", {"type": "string", "enum": list(STATUSES)}, "with this status"), limit, all_users])},
        "/api/runs/{run_id}": {"get": _op("One run, with its progress", "read", {"200": _answer("the run", run), **_errors(401, 403, 404)}, params=[run_id])},
        "/api/runs/{run_id}/cancel": {"post": _op("Cancel a queued or running run", "write", {"200": _answer("the run", run), **_errors(401, 403, 404, 409)}, params=[run_id])},
        "/api/runs/{run_id}/output": {"get": _op("The output notebook", "read", {"200": _answer("the notebook", {"type": "object"}, "application/x-ipynb+json"), **_errors(401, 403, 404)}, params=[run_id])},
        "/api/runs/{run_id}/output.html": {"get": _op("The output notebook as HTML (sandboxed)", "read", {"200": _answer("the page", {"type": "string"}, "text/html"), **_errors(401, 403, 404)}, params=[run_id])},
        "/api/runs/{run_id}/log": {"get": _op("The run's log", "read", {"200": _answer("the log", {"type": "string"}, "text/plain"), **_errors(401, 403, 404)}, params=[run_id])},
        "/api/inspect": {"post": _op("A notebook's kernel and parameters", "read", {"200": _answer("what the notebook takes", {"type": "object"}), **_errors(400, 401, 403)},
                                     body={"type": "object", "required": ["notebook"], "properties": {"notebook": {"$ref": "#/components/schemas/Notebook"}}})},
        "/api/profiles": {"get": _op("The profiles you may run jobs with", "read", {"200": _answer("the profiles", {"type": "object"}), **_errors(401, 403)})},
        "/api/openapi.json": {"get": _op("This document", None, {"200": _answer("OpenAPI 3.1", {"type": "object"})})},
        "/api/runner/{run_id}": {"post": {
            "summary": "A remote runner's report (runs on Kubernetes; not for people)", "tags": ["runner"],
            "description": "Authenticated by the run's own bearer token (`Authorization: Bearer ...`), "
                           "not by the hub. 403 for a wrong token or a run not executing remotely.",
            "security": [{"runToken": []}], "parameters": [_path_param("run_id")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"204": _answer("received"), "403": _answer("wrong token, or no such run", None),
                          "413": _answer("report too large")},
        }},
    }
    trigger = {"oneOf": [
        {"type": "object", "required": ["type", "cron"], "properties": {"type": {"const": "cron"}, "cron": {"type": "string", "examples": ["0 6 * * 1-5"]}, "timezone": {"type": "string", "default": "UTC"}}, "additionalProperties": False},
        {"type": "object", "required": ["type"], "properties": {"type": {"const": "once"}}, "additionalProperties": False},
        {"type": "object", "required": ["type", "path"], "properties": {"type": {"const": "watch"}, "path": {"type": "string", "examples": ["incoming/*.csv"]}, "parameter": {"type": "string", "default": "trigger_file"}}, "additionalProperties": False},
    ]}
    schemas = {
        "Error": {"type": "object", "required": ["status", "message"], "properties": {"status": {"type": "integer"}, "message": {"type": "string"}}},
        "Notebook": {"type": "object", "required": ["content"], "properties": {"path": {"type": "string", "examples": ["reports/nightly.ipynb"]}, "content": {"type": "object", "description": "the notebook's JSON (nbformat 4)"}}},
        "Trigger": trigger,
        "JobRequest": {"type": "object", "additionalProperties": False, "properties": {
            "name": {"type": "string", "maxLength": 100},
            "notebook": {"$ref": "#/components/schemas/Notebook"},
            "trigger": {"$ref": "#/components/schemas/Trigger"},
            "parameters": {"type": "object"},
            "profile": {"type": "string"},
            "timeout": {"type": "integer", "minimum": 1},
            "retries": {"type": "integer", "minimum": 0},
            "retry_backoff": {"type": "number", "minimum": 0},
            "missed": {"type": "string", "enum": ["run_once", "skip"]},
            "notify": {"type": ["object", "null"], "properties": {"url": {"type": "string", "format": "uri"}, "on": {"type": "array", "items": {"enum": ["failure", "success"]}}}},
            "retention": {"type": "object", "properties": {"keep_runs": {"type": "integer", "minimum": 1}, "keep_days": {"type": "integer", "minimum": 1}}},
            "paused": {"type": "boolean"},
        }},
        "Run": {"type": "object", "properties": {
            "id": {"type": "integer"}, "job_id": {"type": "integer"}, "job_name": {"type": "string"}, "owner": {"type": "string"},
            "attempt": {"type": "integer"}, "trigger": {"enum": ["cron", "once", "manual", "watch", "retry", "missed"]},
            "status": {"enum": list(STATUSES)}, "parameters": {"type": "object"},
            "scheduled_for": {"type": ["string", "null"], "format": "date-time"}, "queued_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"}, "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "duration": {"type": ["number", "null"]}, "progress": {"type": ["object", "null"], "properties": {"cell": {"type": "integer"}, "cells": {"type": "integer"}}},
            "reason": {"type": "string"}, "has_output": {"type": "boolean"},
        }},
        "Job": {"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "owner": {"type": "string"}, "notebook": {"type": "string"},
            "kernel": {"type": "string"}, "notebook_parameters": {"type": "array", "items": {"type": "object"}},
            "parameters": {"type": "object"}, "profile": {"type": "string"}, "trigger": {"$ref": "#/components/schemas/Trigger"},
            "trigger_description": {"type": "string"}, "timeout": {"type": "integer"}, "retries": {"type": "integer"},
            "retry_backoff": {"type": "number"}, "missed": {"type": "string"}, "notify": {"type": ["object", "null"]},
            "retention": {"type": "object"}, "paused": {"type": "boolean"},
            "created": {"type": "string", "format": "date-time"}, "updated": {"type": "string", "format": "date-time"},
            "next_run": {"type": ["string", "null"], "format": "date-time"},
            "last_run": {"oneOf": [{"$ref": "#/components/schemas/Run"}, {"type": "null"}]},
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "HubForge jobs", "version": "1", "description": "Scheduled notebook jobs (docs/jobs.md)."},
        "servers": [{"url": prefix.rstrip("/")}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"hubToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                                             "description": "`token <a JupyterHub API token>`"},
                                "runToken": {"type": "http", "scheme": "bearer",
                                             "description": "the run's token, from its Secret"}},
        },
    }
