"""ASGI middleware: request ids, JSON access logs, request metrics, body size and pace, last-resort 500.

Pure ASGI (not ``BaseHTTPMiddleware``) so that bodies stream through untouched and the byte limit is
enforced while the body arrives, not after it has been buffered.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

import anyio
from fastapi.security.utils import get_authorization_scheme_param
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datasets.errors import ClearsightError
from serve.auth import Role
from serve.deps import check_role, client_address, principal_from_headers
from serve.errors import RequestTimeoutError, RequestTooLargeError
from serve.metrics import Metrics
from serve.problems import PROBLEM_BASE, PROBLEM_JSON, problem_for, problem_headers
from serve.settings import ServeSettings

__all__ = ["REVIEW_PAGE_CSP", "BodyLimitMiddleware", "RequestContextMiddleware"]

access_log = logging.getLogger("clearsight.serve.access")
error_log = logging.getLogger("clearsight.serve.error")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CLOSE = (b"connection", b"close")


async def _send_problem(
    send: Send,
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    path: str,
    request_id: str | None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(
        {
            "type": PROBLEM_BASE + slug,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": path,
            "request_id": request_id,
        }
    ).encode()
    raw_headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += headers or []
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


REVIEW_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""What a review page may load: its own script, stylesheet and images (the stored pictures and
heatmaps), nothing inline and nothing from elsewhere, so that text slipped into a page (a
declaration, a note) runs nothing even if escaping ever failed."""

# The review pages hold declarations, findings and a CSRF token: never cached (a shared machine's
# back button), never framed (clickjacking the outcome form), forms posted only back here.
_REVIEW_PAGE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", REVIEW_PAGE_CSP.encode()),
]


def _is_review_page(path: str) -> bool:
    """The review pages and their form posts; stored images and heatmaps set their own headers."""
    return (path == "/review" or path.startswith("/review/")) and not path.startswith("/review/files/")


class RequestContextMiddleware:
    """Outermost layer: assigns the request id, logs one JSON line per request, counts and times it.

    A client-supplied ``X-Request-ID`` is kept when it is short and plain (so that ids can be followed
    across systems) and replaced by a fresh one otherwise; it is echoed on every response.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": None}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                # Stored uploads are served back to officers: a browser must take each response
                # for the type it is labelled, never sniff an "image" into a page.
                headers.append((b"x-content-type-options", b"nosniff"))
                if _is_review_page(scope["path"]):
                    headers.extend(_REVIEW_PAGE_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # last resort: a client never sees a dropped connection
            error_log.exception("unhandled error", extra={"request_id": request_id})
            if status_holder["status"] is None:
                await _send_problem(
                    send_wrapper,
                    status=500,
                    slug="internal",
                    title="Internal error",
                    detail=f"unexpected {type(exc).__name__}; quote request id {request_id}",
                    path=scope.get("path", ""),
                    request_id=request_id,
                    # how much of the body the failed app read is unknown: the rest must not
                    # hold the connection, or be taken for the next request
                    headers=[_CLOSE],
                )
        finally:
            status = status_holder["status"] or 500
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            # a label per invented method would let any client grow the metrics without bound
            method = method if method in _METHODS else "OTHER"
            self.metrics.requests.labels(endpoint, method, str(status)).inc()
            self.metrics.latency.labels(endpoint, method, str(status)).observe(elapsed)
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "endpoint": endpoint,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "principal": scope["state"].get("principal"),
                    **scope["state"].get("log_extra", {}),
                },
            )


UPLOADS: dict[str, Role] = {"/v1/shipments": Role.SUBMITTER, "/v1/score": Role.OFFICER}
"""The routes whose bodies carry images (POST), with the role each admits besides admin, as the
route's own dependency does: every other body is a small form or JSON."""
SMALL_BODY_BYTES = 64 * 1024
"""The most any other body may hold: an outcome, a login form."""
KEYED_BODIES: tuple[tuple[re.Pattern[str], Role], ...] = (
    (re.compile(r"/v1/outcomes"), Role.OFFICER),
    (re.compile(r"/v1/shipments/[^/]+/outcome"), Role.OFFICER),
)
"""The other routes whose bodies (POST) are parsed before the route's own dependency checks the
key: an outcome body that was not JSON got 422 before a missing, wrong or submitter's key was
told 401 or 403, and a wrong key went uncounted towards the lockout."""


def _keyed_role(route: str) -> Role | None:
    """The role a POST to ``route`` admits besides admin, where its key is checked here first."""
    role = UPLOADS.get(route.rstrip("/"))
    if role is None:
        role = next((r for pattern, r in KEYED_BODIES if pattern.fullmatch(route.rstrip("/"))), None)
    return role


def _body_pace(scope: Scope) -> tuple[float, int]:
    """(body_timeout_s, body_min_bytes_per_s) of the started app, or their defaults before it started."""
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    settings = services.settings if services is not None else None
    if settings is None:
        fields = ServeSettings.model_fields
        return fields["body_timeout_s"].default, fields["body_min_bytes_per_s"].default
    return settings.body_timeout_s, settings.body_min_bytes_per_s


def _has_body(headers: dict[bytes, bytes]) -> bool:
    """Whether the request's head announces a body (chunked, or a Content-Length other than 0)."""
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0").strip() not in (b"0", b"")


def _refusal(scope: Scope, role: Role) -> tuple[int, str, str, str, dict[str, str]] | None:
    """The problem (status, slug, title, detail, headers) the key of an upload, or of another body
    parsed before its route's dependencies (:data:`KEYED_BODIES`), earns before its body is read:
    none, a wrong one, one from an address locked out for wrong keys, or one whose role the route
    does not admit (``role``, or admin), as the route's own dependency would answer (which
    checks it again); None to let it through (the insecure development mode included)."""
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    if services is None:  # not started: the app answers for itself
        return None
    request = Request(scope)
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    bearer = credentials if scheme.lower() == "bearer" and credentials else None  # as HTTPBearer reads it
    try:
        principal = principal_from_headers(
            services, bearer, request.headers.get("x-api-key"), client=client_address(request)
        )
        scope.setdefault("state", {})["principal"] = principal.name  # the access log says who asked
        check_role(principal, (role,))
    except ClearsightError as exc:
        status, slug, title = problem_for(exc)
        return status, slug, title, str(exc), problem_headers(exc, status) or {}
    return None


class BodyLimitMiddleware:
    """Bounds what a request may cost before the app reads it: FastAPI parses a body before any
    dependency authenticates the caller, so a client without a key could make the server read and
    parse 64 MiB of JSON (about 380 MB of memory) to be told 401.

    Bodies of image uploads (:data:`UPLOADS`) may hold ``max_bytes``, every other body
    :data:`SMALL_BODY_BYTES`. Uploads and outcomes (:data:`KEYED_BODIES`) are refused at once when
    their key is missing or wrong, their address locked out, or their role not the route's
    (:func:`_refusal`): FastAPI parses a body before the route's dependencies check the key.

    Sizes are checked from ``Content-Length`` up front, and by counting while streaming: a chunked
    or lying client is cut off when its running total passes the limit, the 413 problem is sent at
    once and the app sees a disconnect, whose own response is then discarded.

    A body must also keep coming: one that goes ``body_timeout_s`` without a byte, or is still
    arriving ``body_timeout_s`` past one second per ``body_min_bytes_per_s`` bytes it sent, is cut
    off the same way with 408 and the connection closed (the time the app spends not reading does
    not count). uvicorn has no limit of its own there: a client sending a byte every ten seconds
    held its connection for as long as it liked.

    Every response sent before its request's body has been read whole (a refusal, a 400, 413 or 408
    from here, or the app's own answer to a body it never read: a 404, a 405) closes the connection
    (``Connection: close``): on a kept-alive connection uvicorn reads and discards the rest of that
    body untimed, each byte renewing its keep-alive timer, so a client trickling it held the
    connection, and one of ``limit_concurrency``'s slots, for good.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        path = scope.get("path", "")
        headers = dict(scope.get("headers", []))
        root = scope.get("root_path", "")
        route = path[len(root) :] if root and path.startswith(root) else path  # behind a proxy prefix
        role = _keyed_role(route) if scope.get("method") == "POST" else None
        upload = route.rstrip("/") in UPLOADS and role is not None
        has_body = _has_body(headers)
        unread = [_CLOSE] if has_body else []  # what a reply sent before reading the body adds
        refused = _refusal(scope, role) if role is not None else None
        if refused is not None:
            status, slug, title, detail, extra = refused
            refusal_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
            await _send_problem(
                send,
                status=status,
                slug=slug,
                title=title,
                detail=detail,
                path=path,
                request_id=request_id,
                headers=refusal_headers + unread,
            )
            return
        limit = self.max_bytes if upload else min(self.max_bytes, SMALL_BODY_BYTES)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                await _send_problem(
                    send,
                    status=400,
                    slug="bad-request",
                    title="Bad request",
                    detail=f"Content-Length {length.decode('latin-1')!r} is not a byte count",
                    path=path,
                    request_id=request_id,
                    headers=[_CLOSE],  # where the body ends is unknown
                )
                return
            if declared > limit:
                await _send_problem(
                    send,
                    status=413,
                    slug="request-too-large",
                    title="Request too large",
                    detail=f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                    path=path,
                    request_id=request_id,
                    headers=unread,
                )
                return

        pause_s, min_rate = _body_pace(scope)
        received = 0
        waited = 0.0  # time spent in receive(): the client's, not the app's between reads
        body_done = False
        cut_off = False
        answered = False

        async def cut(exc: ClearsightError) -> Message:
            nonlocal cut_off
            cut_off = True
            if not answered:  # past the app's first line of a reply, a problem cannot follow
                status, slug, title = problem_for(exc)
                await _send_problem(
                    send,
                    status=status,
                    slug=slug,
                    title=title,
                    detail=str(exc),
                    path=path,
                    request_id=request_id,
                    # the rest of the body is never read: the connection cannot carry another request
                    headers=[_CLOSE],
                )
            return {"type": "http.disconnect"}

        async def limited_receive() -> Message:
            nonlocal received, waited, body_done
            if cut_off:
                return {"type": "http.disconnect"}
            if body_done:  # the app waits for the client to go away: for as long as it likes
                return await receive()
            # the body's time grows with what it sent, so a slow link's large upload is not cut;
            # one byte every few seconds (a connection held for nothing) is
            earned = pause_s + received / min_rate - waited
            allowed = max(min(pause_s, earned), 0.0)
            began = time.monotonic()
            message: Message | None = None
            with anyio.move_on_after(allowed):
                message = await receive()
            waited += time.monotonic() - began
            if message is None:
                if allowed < pause_s:
                    why = (
                        f"came too slowly: {received} bytes in {waited:.1f} s; after its first "
                        f"{pause_s:g} s a body must come at {min_rate} bytes/s or faster"
                    )
                else:
                    why = f"went {pause_s:g} s without a byte, after {received} bytes"
                return await cut(RequestTimeoutError(f"request body {why}"))
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    return await cut(
                        RequestTooLargeError(
                            f"request body passed the limit of {limit} bytes while streaming"
                        )
                    )
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if cut_off:  # the 413 or 408 has already gone out; drop the app's reply to the disconnect
                return
            # a body HTTP/1.1 framing does not announce is not there to trickle: GETs stay kept alive
            if message["type"] == "http.response.start" and has_body and not body_done:
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"connection" and v.lower() == b"close" for k, v in headers):
                    message = {**message, "headers": [*headers, _CLOSE]}
            answered = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
