"""The OpenAPI 3.1 document, written from the endpoint table the server routes with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _wire as w
from ._codec import JSON, MSGPACK
from ._schema import Obj

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._app import _Endpoint  # pyright: ignore[reportPrivateUsage]

__all__ = ["openapi_document"]

_ERRORS: dict[int, str] = {
    400: "Invalid request (`invalid_request`, `invalid_argument`, `invalid_queue_name`, "
    "`invalid_id`); `field` names the offending field",
    401: "No or unknown bearer token (`unauthorized`)",
    403: "The token lacks the endpoint's scope (`forbidden`)",
    404: "Unknown job (`job_not_found`) or route (`not_found`)",
    409: "Conflict (`duplicate_job_id`, `kv_conflict`, `invalid_state`)",
    410: "The claim is no longer held (`claim_lost`): drop the job, do not retry",
    413: "The body is over the server's limit (`payload_too_large`)",
    415: "Neither JSON nor MessagePack (`unsupported_media_type`)",
    503: "Storage unavailable, queue closed or server shutting down (`unavailable`); "
    "retry after `Retry-After` seconds",
}
_MSGPACK_NOTE = "The same map in MessagePack: byte fields are `bin` instead of base64 strings."


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        JSON: {"schema": schema},
        MSGPACK: {"schema": schema, "x-taquba-note": _MSGPACK_NOTE},
    }


def _error_response(code: int, text: str, error_ref: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": text, "content": _content(error_ref)}
    if code == 401:
        response["headers"] = {
            "WWW-Authenticate": {"schema": {"type": "string"}, "description": "``Bearer``"}
        }
    elif code == 503:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}
        }
    return response


def openapi_document(endpoints: Sequence[_Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints``."""
    from . import __version__

    named: dict[str, Obj] = {}
    paths: dict[str, dict[str, Any]] = {}

    def collect(node: object) -> None:
        if isinstance(node, Obj):
            for obj in node.named():
                named.setdefault(obj.name or "", obj)
            for spec in node.fields.values():
                collect(spec.schema)
        else:
            for attr in ("inner", "items", "target", "values"):
                child = getattr(node, attr, None)
                if child is not None:
                    collect(child)

    for ep in endpoints:
        operation: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "security": [] if ep.scope is None else [{"bearer": [ep.scope]}],
        }
        if ep.scope is not None:
            operation["description"] = f"Needs a token with the `{ep.scope}` scope (or above)."
        parameters: list[dict[str, Any]] = []
        for param in ep.params:
            parameters.append(
                {
                    "name": param.name,
                    "in": param.where,
                    "required": param.where == "path" or param.required,
                    "schema": param.schema.json_schema(),
                }
            )
            collect(param.schema)
        if parameters:
            operation["parameters"] = parameters
        if ep.method == "POST":
            body = ep.body or w.EMPTY_BODY
            collect(body)
            operation["requestBody"] = {
                "required": bool(body.fields) and any(f.required for f in body.fields.values()),
                "content": _content(body.json_schema()),
            }
        collect(ep.response)
        responses: dict[str, Any] = {
            "200": {"description": "Success", "content": _content(ep.response.json_schema())}
        }
        codes = {400, 413, 415, 503, *ep.errors}
        if ep.scope is not None:
            codes |= {401, 403}
        if any(p.where == "path" for p in ep.params):
            codes.add(404)
        for code in sorted(codes):
            responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
        operation["responses"] = responses
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation

    collect(w.ERROR)
    schemas = {name: obj.definition() for name, obj in sorted(named.items())}
    error_ref = {"$ref": "#/components/schemas/Error"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taquba-server",
            "version": __version__,
            "description": (
                "Wire protocol v1 of a taquba queue's owner process. Bodies are JSON or "
                "MessagePack (request by Content-Type, response by Accept); byte fields are "
                "base64 strings in JSON and bin in MessagePack. Timestamps are epoch "
                "milliseconds, durations seconds. Unknown request fields are refused."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                f"E{code}": _error_response(code, text, error_ref) for code, text in _ERRORS.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token with the scopes produce, work or admin.",
                }
            },
        },
    }
