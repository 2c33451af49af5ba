"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from pipeline.audit import AuditStore, HeadSealError
from serve.deps import MetricsReaderDep, ServicesDep
from serve.metrics import CONTENT_TYPE_LATEST
from serve.problems import AUTHENTICATED, problem_response, problem_responses, retry_after_of
from serve.schemas import Health, Readiness

__all__ = ["router"]

log = logging.getLogger("clearsight.serve.error")
router = APIRouter(tags=["operations"])

READY_WRITE_WAIT_S = 2.0
"""How long the readiness probe waits for the audit store's write lock: writes hold it for
milliseconds, so a wait this long means a writer is stuck and every write would fail."""


# HEAD too, as load balancers and uptime monitors probe (kept out of the OpenAPI document, where
# it would repeat GET's operation id)
@router.get("/healthz", response_model=Health, summary="Alive")
@router.head("/healthz", response_model=Health, include_in_schema=False)
async def healthz() -> Health:
    """The process is up and serving (no dependency is checked); HEAD answers the same status."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem_responses(
        (503,),
        {
            503: "Not ready: no model loaded, the audit store unreachable or its writes blocked, or "
            "its head not sealed with this server's secret (not-ready); probe again after Retry-After "
            "seconds"
        },
    ),
    summary="Ready to score and decide",
)
@router.head("/readyz", response_model=Readiness, include_in_schema=False)
async def readyz(request: Request, services: ServicesDep) -> Response | Readiness:
    """Ready when at least one model is loaded and the audit store answers, its head carrying this
    server's seal; 503 otherwise. HEAD answers the same status."""
    problems = []
    if not services.batchers:
        problems.append("no model loaded")
    audit_state = "unconfigured"
    if services.audit is not None:
        try:
            await run_in_threadpool(services.audit.ping, write_wait_s=READY_WRITE_WAIT_S)
            if isinstance(services.audit, AuditStore):  # an injected fake has no head to check
                # the secret rotated under a running service: every append would fail (500)
                await run_in_threadpool(services.audit.check_head_seal)
            audit_state = "reachable"
        except HeadSealError as exc:
            audit_state = "reachable"
            log.error("audit store's head not sealed with this server's secret: %s", exc)
            problems.append(
                # no secret seals a head with no seal: blaming the secret sent operators to rotate it
                "the audit store's head carries no seal: a writer not given the server's key appended "
                "it, or its seal was cleared; check it, then `clearsight audit seal --expect SEQ:HASH` "
                "(the service's log says more)"
                if exc.unsealed
                else "the audit store's head does not carry this server's seal: CLEARSIGHT_AUDIT_SECRET "
                "is not the store's, or the head was forged (the service's log says more)"
            )
        except Exception as exc:  # any failure to answer, or to take the write lock, means not ready
            audit_state = "unreachable"
            # open to anyone: the store's URL, host and user stay in the log
            log.error("audit store unreachable or not writable: %s: %s", type(exc).__name__, exc)
            problems.append("audit store unreachable or its writes blocked (the service's log says why)")
    else:
        problems.append("no audit store")
    if problems:
        return problem_response(
            request,
            status=503,
            slug="not-ready",
            title="Not ready",
            detail="; ".join(problems),
            headers={"Retry-After": str(retry_after_of(request))},
        )
    return Readiness(status="ready", models_loaded=len(services.predictors), audit=audit_state)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}},
        **problem_responses(
            AUTHENTICATED,
            {403: "A submitter's key (forbidden); no key is asked for where CLEARSIGHT_METRICS_PUBLIC=1"},
        ),
    },
)
async def metrics(services: ServicesDep, _reader: MetricsReaderDep) -> Response:
    """Requests and latency by endpoint and status, batch sizes, queue depth, decisions, scores."""
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
