"""The one place where errors become HTTP responses: RFC 9457 ``application/problem+json`` bodies.

Every error a client can cause gets a 4xx with ``type``, ``title``, ``status``, ``detail`` (naming
the bad value), ``instance`` (the request path) and ``request_id``. FastAPI's own 404/405/422 are
mapped here too, and anything unexpected becomes a 500 problem rather than a dropped connection.

The OpenAPI document describes them from here as well: each route lists the statuses it returns
with :func:`problem_responses`, every one as ``application/problem+json`` of the shared
:class:`Problem` schema (:class:`ValidationProblem` for a 422), with the headers sent
(``Retry-After``, ``WWW-Authenticate``); :func:`install` adds the schemas to the document.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from datasets.errors import (
    ArtifactError,
    AuditError,
    CargoTypeError,
    ClearsightError,
    ConflictError,
    DatasetFormatError,
    EngineError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    ModelError,
    PolicyError,
    SchemaVersionError,
    UnsafePathError,
)
from datasets.json_text import MAX_INT_DIGITS
from pipeline.audit.seal import SealBrokenError
from pipeline.audit.writing import DecisionUnnamed
from serve.errors import (
    DecidedAgainError,
    NotAuthenticatedError,
    NotFoundError,
    OutcomeExistsError,
    OverloadedError,
    PermissionDeniedError,
    RequestTimeoutError,
    RequestTooLargeError,
    ScoringTimeoutError,
    ShipmentTakenError,
    TierNotAllowedError,
    TooManyAttemptsError,
    UnsupportedMediaTypeError,
)

__all__ = [
    "AUTHENTICATED",
    "PROBLEM_BASE",
    "PROBLEM_JSON",
    "FieldError",
    "Problem",
    "ValidationProblem",
    "install",
    "message_with_input",
    "problem_responses",
    "problem_for",
    "problem_headers",
    "problem_response",
    "retry_after_of",
]

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://clearsight.dev/problems/"

# Most specific first: the first class an error is an instance of decides its status and type.
_TABLE: tuple[tuple[type[ClearsightError], int, str, str], ...] = (
    (NotAuthenticatedError, 401, "unauthenticated", "Missing or invalid API key"),
    (ShipmentTakenError, 403, "shipment-taken", "Shipment sent first under another key"),
    (TierNotAllowedError, 403, "aeo-tier-not-allowed", "AEO tier not to be declared"),
    (PermissionDeniedError, 403, "forbidden", "Not allowed"),
    (NotFoundError, 404, "not-found", "Not found"),
    (RequestTimeoutError, 408, "request-timeout", "Request body too slow"),
    (RequestTooLargeError, 413, "request-too-large", "Request too large"),
    (TooManyAttemptsError, 429, "too-many-attempts", "Too many wrong API keys"),
    (UnsupportedMediaTypeError, 415, "unsupported-media-type", "Unsupported media type"),
    (ImageTooLargeError, 413, "image-too-large", "Image too large"),
    (ImageDecodeError, 422, "bad-image", "Not a usable image"),
    (CargoTypeError, 422, "unknown-cargo-type", "Unknown cargo type"),
    (OutcomeExistsError, 409, "outcome-exists", "Outcome already recorded"),
    (DecidedAgainError, 409, "decided-again", "Decided again since"),
    (DecisionUnnamed, 409, "decision-unnamed", "Outcome names no decision"),
    (ConflictError, 409, "conflict", "Conflicts with a recorded decision"),
    (UnsafePathError, 400, "unsafe-path", "Unsafe path"),
    (DatasetFormatError, 422, "bad-input", "Invalid input"),
    (InputError, 422, "bad-input", "Invalid input"),
    (OverloadedError, 503, "overloaded", "Service overloaded"),
    (ScoringTimeoutError, 504, "timeout", "Scoring timed out"),
    (ArtifactError, 503, "model-unavailable", "Model unavailable"),
    (ModelError, 500, "model-error", "Model failed"),
    (PolicyError, 500, "policy-error", "Decision policy error"),
    # a record a decision rests on fails its seal: no retry mends it, an operator must run verify
    (SealBrokenError, 500, "audit-record-forged", "Audit record fails its seal"),
    (AuditError, 503, "audit-unavailable", "Audit store unavailable"),
    (EngineError, 503, "engine-unavailable", "Scoring engine unavailable"),
    (ClearsightError, 500, "internal", "Internal error"),
)

_NOT_MENDED_BY_RETRY = (ArtifactError, SchemaVersionError)
"""503s an operator must mend: no Retry-After."""

_TOLD_TO_CLIENTS = (OverloadedError, ScoringTimeoutError)
"""Server-side errors whose message is for the client: how full the queue is, which deadline passed."""

error_log = logging.getLogger("clearsight.serve.error")

MAX_SHOWN_INPUT = 60
"""The most characters of a value sent that a validation problem repeats (:func:`_shown_input`)."""

_NOT_SHOWN = frozenset({"key", "csrf"})
"""Fields whose value a problem never repeats: the review page's API key and form token."""

_HTTP_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Missing or invalid API key"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("request-too-large", "Request too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation", "Request validation failed"),
}


class Problem(BaseModel):
    """An RFC 9457 problem: the body of every error (``application/problem+json``)."""

    type: str = Field(
        examples=[PROBLEM_BASE + "not-found"],
        description=f"What went wrong: {PROBLEM_BASE} and a slug (the README lists them); tell "
        "refusals apart by it, not by detail.",
    )
    title: str = Field(examples=["Not found"], description="The type in words.")
    status: int = Field(examples=[404], description="The HTTP status, again.")
    detail: str = Field(
        examples=["no decision recorded for shipment 'SHP-2026-0001'"],
        description="This occurrence: the bad value and what would be accepted; a server-side "
        "failure says only its kind and the request id.",
    )
    instance: str | None = Field(examples=["/v1/shipments/SHP-2026-0001"], description="The request's path.")
    request_id: str | None = Field(
        examples=["5b0c3f6a9d2e4f1a8c7b6a5d4e3f2a1b"],
        description="The request's id (also in X-Request-ID): quote it to the service's operators.",
    )


class FieldError(BaseModel):
    """One field a request got wrong."""

    loc: str = Field(
        examples=["body.found"],
        description="Where, dotted: the request part (body, query, path, header) and the field.",
    )
    msg: str = Field(
        examples=["String should match pattern '^[a-z][a-z0-9_]{0,63}$' (sent 'Foreign Object')"],
        description="What is wrong, and the value sent where it is a single value (text, a number, "
        f"true/false or null; text shortened to {MAX_SHOWN_INPUT} characters, control and format "
        "characters escaped); never the review page's API key or form token.",
    )
    type: str = Field(examples=["string_pattern_mismatch"], description="Pydantic's error type.")


class ValidationProblem(Problem):
    """A 422: a request that does not match its schema (type .../validation, with errors), or values
    the service refuses (bad-input, bad-image, unknown-cargo-type: no errors)."""

    errors: list[FieldError] | None = Field(
        default=None, description="Each field that does not match the schema (type .../validation only)."
    )


_DESCRIBED: dict[int, str] = {
    400: "A body that cannot be read: multipart without a boundary, over 1,000 parts or a field over "
    "1 MiB; a Content-Length that is not a number (bad-request)",
    401: "No API key, or one that matches none (unauthenticated)",
    403: "The key's role may not use this route (forbidden)",
    404: "No decision recorded for this shipment (not-found)",
    408: "The request body stalled or trickled: no byte for body_timeout_s, or slower on average than "
    "body_min_bytes_per_s after it; the connection is closed (request-timeout)",
    409: "Conflicts with what is recorded",
    413: "Over a limit: body, image count, pixels per image or per request (request-too-large, "
    "image-too-large)",
    415: "A body of another type than this route reads (unsupported-media-type)",
    422: "The request does not match its schema (validation, with errors), or a value refused",
    429: "Too many wrong API keys from this address: wait Retry-After seconds (too-many-attempts)",
    500: "A server-side failure: quote request_id to the service's operators (internal, model-error, "
    "policy-error, audit-record-forged)",
    503: "Unavailable: retry after Retry-After seconds; without one, an operator must act first",
    504: "Scoring missed the request deadline (timeout)",
}
"""What each status means on any route; a route adds to it what is its own."""

AUTHENTICATED = (401, 403, 429, 500)
"""What every route behind an API key can answer: no key or a wrong one, a role it does not admit,
an address locked out for wrong keys, a server-side failure."""

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (absent where no retry mends it).",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with.",
            "schema": {"type": "string", "examples": ['Bearer realm="clearsight"']},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


def problem_responses(
    statuses: Iterable[int], described: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A route's error responses for FastAPI's ``responses=``: each of ``statuses`` (and each key of
    ``described``) as ``application/problem+json`` of the shared schema, described by ``described``
    where it says what the status means on this route, and with the headers it carries."""
    described = dict(described or {})
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *described}):
        schema = "ValidationProblem" if status == 422 else "Problem"
        response: dict[str, Any] = {
            "description": described.get(status, _DESCRIBED[status]),
            "content": {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[status] = response
    return responses


def _with_problem_schemas(app: FastAPI) -> None:
    """Make ``app.openapi`` add the Problem schemas, which the responses refer to by name."""
    build = app.openapi
    _, defs = models_json_schema(
        [(Problem, "serialization"), (ValidationProblem, "serialization")],
        ref_template="#/components/schemas/{model}",
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def problem_for(exc: ClearsightError) -> tuple[int, str, str]:
    """(status, type slug, title) of a Clearsight error."""
    for cls, status, slug, title in _TABLE:
        if isinstance(exc, cls):
            return status, slug, title
    return 500, "internal", "Internal error"  # pragma: no cover - ClearsightError is the last row


def problem_response(
    request: Request | None,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    instance: str | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    """A problem+json response; ``request_id`` and ``instance`` are taken from the request when given."""
    if request is not None:
        instance = instance or request.url.path
        request_id = request_id or getattr(request.state, "request_id", None)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


DEFAULT_RETRY_AFTER_S = 2
"""Retry-After of a 503 where the app's settings are not at hand (``retry_after_s`` otherwise)."""


def problem_headers(
    exc: ClearsightError, status: int, *, retry_after_s: int = DEFAULT_RETRY_AFTER_S
) -> dict[str, str] | None:
    """The headers a problem of ``exc`` carries: Retry-After, WWW-Authenticate.

    A 503 the client may retry (the queue full, the audit store's lock wait run out or the store
    unreachable, the engine not available) says when: the error's own wait where it has one,
    ``retry_after_s`` otherwise. One no retry mends carries none (a model artifact missing or
    damaged, an audit store at a schema version this service does not write or may not upgrade:
    an operator must act), or a client would retry every few seconds for ever. A 429 waits for the
    lockout to end."""
    if isinstance(exc, OverloadedError | TooManyAttemptsError):
        return {"Retry-After": str(exc.retry_after_s)}
    if status == 503 and not isinstance(exc, _NOT_MENDED_BY_RETRY):
        return {"Retry-After": str(retry_after_s)}
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="clearsight"'}
    return None


def retry_after_of(request: Request) -> int:
    """The service's ``retry_after_s`` setting, or :data:`DEFAULT_RETRY_AFTER_S` before it started."""
    services = getattr(request.app.state, "services", None)
    return services.settings.retry_after_s if services is not None else DEFAULT_RETRY_AFTER_S


async def _clearsight_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClearsightError)
    status, slug, title = problem_for(exc)
    detail = str(exc)
    if status >= 500 and not isinstance(exc, _TOLD_TO_CLIENTS):
        # A server-side failure's message names models, stores, hosts and users: the log keeps
        # it, under the request id the client is given to quote.
        request_id = getattr(request.state, "request_id", None)
        error_log.error("%s: %s", type(exc).__name__, exc, extra={"request_id": request_id})
        detail = f"{title.lower()}; quote request id {request_id} to the service's operators"
    headers = problem_headers(exc, status, retry_after_s=retry_after_of(request))
    return problem_response(request, status=status, slug=slug, title=title, detail=detail, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _shown_input(value: Any) -> str | None:
    """``value``, a client's single value, as a problem shows it: ``true``, ``null``, ``7``, or text
    as ``repr`` writes it (quoted, control and format characters such as U+202E escaped), at most
    :data:`MAX_SHOWN_INPUT` characters; None for an object or a list (the error names its field).

    "String should match pattern ..." alone left a client to guess which of its values was meant,
    and ``"7"`` refused as no integer reads like 7."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if not isinstance(value, int | float | str):
        return None
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_INPUT else text[: MAX_SHOWN_INPUT - 3] + "..."


def message_with_input(err: Mapping[str, Any]) -> str:
    """A pydantic error's message, and the value sent (:func:`_shown_input`) where there is one to
    show: not for a missing field (its input is the object around it), nor the API key or form
    token of the review page's forms."""
    msg = str(err.get("msg", ""))
    loc = err.get("loc", ())
    if err.get("type") == "missing" or (loc and loc[-1] in _NOT_SHOWN):
        return msg
    shown = _shown_input(err.get("input"))
    return msg if shown is None else f"{msg} (sent {shown})"


def _unread_body(exc: BaseException | None) -> str | None:
    """Why a JSON body could not be read, from what FastAPI's reader raised (``exc``), or None where
    it is no such failure. FastAPI answers malformed JSON 422 ("JSON decode error", no reason) and a
    body whose bytes are no UTF-8, nested past Python's recursion limit or holding an integer past
    Python's 4,300 digits 400 ("There was an error parsing the body"): one malformed body, two
    answers, neither saying what is wrong. Each is said here as JsonBodyDep says what it refuses."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at position {exc.pos})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte 0x{exc.object[exc.start]:02x} at position {exc.start}); send JSON as UTF-8"
    if isinstance(exc, RecursionError):
        return "a value is nested too deeply"
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return (
            f"a number of more than {MAX_INT_DIGITS} digits; send at most {MAX_INT_DIGITS}, or the "
            "number as text"
        )
    return None


def _unread_body_response(request: Request, reason: str) -> JSONResponse:
    status, slug, title = problem_for(InputError(reason))
    return problem_response(
        request, status=status, slug=slug, title=title, detail=f"body is not valid: {reason}"
    )


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        reason = _unread_body(exc.__cause__)
        if reason is not None:
            return _unread_body_response(request, reason)
    errors = [
        {
            "loc": _location(err.get("loc", ())),
            "msg": message_with_input(err),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
    return problem_response(
        request,
        status=422,
        slug="validation",
        title="Request validation failed",
        detail=detail,
        extra={"errors": errors},
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and (reason := _unread_body(exc.__cause__)) is not None:
        return _unread_body_response(request, reason)
    slug, title = _HTTP_TITLES.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no resource at {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(
        request,
        status=exc.status_code,
        slug=slug,
        title=title,
        detail=detail,
        headers=dict(exc.headers) if exc.headers else None,
    )


def install(app: FastAPI) -> None:
    """Register the problem handlers on ``app``, and the Problem schemas in its OpenAPI document."""
    _with_problem_schemas(app)
    app.add_exception_handler(ClearsightError, _clearsight_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
