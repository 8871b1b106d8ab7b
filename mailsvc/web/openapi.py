"""The OpenAPI 3.1 description of the JSON API (``/api/openapi.json``): one entry per route of
``web.api``, with the bearer-token scheme and the ``{"error": …}`` answer of every refusal."""

from __future__ import annotations

from typing import Any


def _op(summary: str, *, body: str | None = None, status: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            status: {"description": "OK", "content": {"application/json": {}}},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "4XX": {"$ref": "#/components/responses/Problem"},
        },
    }
    if body == "json":
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {}}}}
    elif body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {body: {"type": "string", "format": "binary"}},
                        "required": [body],
                    }
                }
            },
        }
    return op


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_ADDRESS = {"name": "address", "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``/api/v1``."""
    distribution_schema = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["notice", "supplement", "date-change", "cancellation"]},
            "at": {"type": "string", "description": "local time YYYY-MM-DDTHH:MM; omit: now"},
            "note": {"type": "string"},
            "new_date": {"type": "string"},
            "documents": {"type": "array", "items": {"type": "integer"}},
            "committee": {"type": "string"},
            "override_reason": {
                "type": "string",
                "description": "send despite the notice rule (recorded)",
            },
        },
    }
    schedule = _op(
        "Schedule a distribution (notice, supplement, date change, cancellation); 409 when the "
        "notice rule refuses it without override_reason",
        body="json",
        status="201",
    )
    schedule["requestBody"]["content"]["application/json"]["schema"] = distribution_schema
    check = _op("Check the notice rule for a planned distribution (changes nothing)", body="json")
    check["requestBody"]["content"]["application/json"]["schema"] = distribution_schema
    paths: dict[str, Any] = {
        "/api/v1/councillors": {"get": _op("Councillors with status and mandate dates")},
        "/api/v1/councillors/import": {
            "post": _op(
                "Import a roster CSV; ?dry_run=true shows the plan, ?digest= pins it, "
                "?skip_invalid=true applies the valid rows",
                body="roster",
            )
        },
        "/api/v1/councillors/{address}/reset-password": {
            "parameters": [_ADDRESS],
            "post": _op("Give the councillor a new generated password (returned once)"),
        },
        "/api/v1/councillors/{address}/end-mandate": {
            "parameters": [_ADDRESS],
            "post": _op("End a mandate on a date: {on: YYYY-MM-DD, reason}", body="json"),
        },
        "/api/v1/sessions": {
            "get": _op("Council sessions"),
            "post": _op(
                "Create a session: {number, kind, starts_at, place, title, agenda: [..]}",
                body="json",
                status="201",
            ),
        },
        "/api/v1/sessions/{id}": {
            "parameters": [_ID],
            "get": _op("A session with agenda, documents, distributions"),
        },
        "/api/v1/sessions/{id}/agenda": {
            "parameters": [_ID],
            "post": _op("Add an agenda item: {title}", body="json", status="201"),
        },
        "/api/v1/sessions/{id}/documents": {
            "parameters": [_ID],
            "post": _op(
                "Attach documents (checked by content); fields files, doc_kind, agenda_item",
                body="files",
                status="201",
            ),
        },
        "/api/v1/sessions/{id}/notice-check": {"parameters": [_ID], "post": check},
        "/api/v1/sessions/{id}/distributions": {"parameters": [_ID], "post": schedule},
        "/api/v1/distributions/{id}/cancel": {
            "parameters": [_ID],
            "post": _op("Cancel a scheduled distribution"),
        },
        "/api/v1/sessions/{id}/receipts": {
            "parameters": [_ID],
            "get": _op("The receipts matrix (councillor x distribution) with every event"),
        },
        "/api/v1/relay/stats": {"get": _op("Residents' mail per councillor (?since=YYYY-MM-DD)")},
        "/api/v1/audit": {"get": _op("The audit log, newest first (?limit, ?offset, ?actor)")},
        "/api/v1/queue": {"get": _op("Deliveries (?status=deferred,dead)")},
        "/api/v1/queue/retry": {
            "post": _op("Retry one message {queue_id} or every dead letter {all_dead: true}")
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailsvc clerks' API",
            "version": "1",
            "description": "Tokens: mailsvc web token create --name NAME. Times without a zone "
            "are the council's local time; times ending in Z are UTC.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Unauthorized": {
                    "description": "Missing, unknown or revoked token",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
                "Problem": {
                    "description": "The request cannot be carried out as it is",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                }
            },
        },
    }
