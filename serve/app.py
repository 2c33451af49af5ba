"""The FastAPI app: built by :func:`create_app`, which wires settings, services, middleware and routers.

Models, the policy and the audit store are opened once in the lifespan (or injected, for tests) and
closed at shutdown; each cargo type gets a :class:`~serve.batching.MicroBatcher` with its own thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from datasets.errors import InputError, ModelError
from models.inference import Predictor
from pipeline.settings import MIN_AUDIT_SECRET_CHARS, weak_audit_secret
from serve import problems
from serve.auth import STRONG_KEY_CHARS, KeyRing, SessionSigner, parse_api_keys
from serve.batching import MicroBatcher
from serve.deps import Services
from serve.lockout import FailedAttempts, SharedFailures
from serve.metrics import Metrics
from serve.middleware import BodyLimitMiddleware, RequestContextMiddleware
from serve.pixel_budget import PixelBudget
from serve.routes import health, models, review, score, shipments
from serve.settings import ServeSettings
from serve.storage import ImageStore

__all__ = ["build_services", "check_keys", "create_app", "create_app_from_env", "preflight"]

log = logging.getLogger("clearsight.serve")

STATIC_DIR = Path(__file__).parent / "static"

MIN_SESSION_SECRET_CHARS = MIN_AUDIT_SECRET_CHARS
"""The shortest session_secret taken: the review page's sessions are signed with it."""


def _load_predictors(paths: list[Path], *, runtime: str) -> dict[str, Predictor]:
    from models.artifact import load_model  # imported here: only a real server loads artifacts

    loaded: dict[str, Predictor] = {}
    for path in paths:
        predictor = load_model(path, runtime=runtime)
        if predictor.cargo_type in loaded:
            raise ModelError(
                f"two models for cargo type {predictor.cargo_type!r}: "
                f"{loaded[predictor.cargo_type].model_id} and {predictor.model_id} ({path}); "
                "load one model per cargo type"
            )
        loaded[predictor.cargo_type] = predictor
    return loaded


def _load_policy(settings: ServeSettings) -> Any:
    from pipeline.policy import default_policy_path, load_policy

    return load_policy(settings.policy if settings.policy is not None else default_policy_path())


def _load_register(settings: ServeSettings, policy: Any) -> Any:
    """The trader register's file, watched for changes, or None; every tier in it must be one the
    policy knows.

    Raises:
        InputError: an unreadable register, or a tier the policy lists no offset for (a typo such as
            ``aeof`` would silently give that trader none).
    """
    if settings.trader_register is None:
        return None
    from pipeline.trader_register import RegisterFile, check_tiers

    return RegisterFile(settings.trader_register, check=lambda read: check_tiers(read, policy))


def _open_audit(settings: ServeSettings) -> Any:
    from pipeline.audit import AuditStore
    from pipeline.settings import audit_seal_key

    return AuditStore.open(settings.audit_db, seal_key=audit_seal_key(settings))


def preflight(settings: ServeSettings) -> dict[str, Predictor]:
    """Load and check what the service needs before it starts, so that a bad model folder, policy,
    trader register or audit store is an ``Error:`` line instead of a failed start-up: returns the
    loaded models (for a single worker to serve; several load their own).

    Raises:
        ModelError / ArtifactError / PolicyError / InputError / AuditError: from loading;
            InputError too where CLEARSIGHT_AUDIT_SECRET does not seal the audit store's head.
    """
    from pipeline.audit import AuditStore, HeadSealError

    policy = _load_policy(settings)
    _load_register(settings, policy)  # the quick checks first
    _check_data_dir(settings.data_dir)
    _check_host(settings.host)
    AuditStore.check_url(settings.audit_db)
    predictors = _load_predictors(settings.models, runtime=settings.runtime)
    policy.check_models({cargo: p.model_id for cargo, p in predictors.items()})
    try:
        audit = _open_audit(settings)  # last: a start that fails on anything else leaves no new store
    except HeadSealError as exc:
        # every decision would fail (500) behind a /readyz that said ready: a setting to change
        raise InputError(str(exc)) from exc
    try:
        audit.ping()
        audit.check_policy(policy.version, policy.sha256)  # its first decision answered 500
    finally:
        audit.close()
    return predictors


def _check_host(host: str) -> None:
    """Refuse an interface this machine cannot bind, before the models load: uvicorn found it only
    then, and said so in a log line with no option named (exit 3).

    Raises:
        InputError: ``host`` does not resolve, or names no address of this machine.
    """
    try:
        found = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: a label IDNA cannot encode
        raise InputError(
            f"--host {host!r} (CLEARSIGHT_HOST) does not resolve ({exc}); give an address of this "
            "machine (127.0.0.1, 0.0.0.0 for every interface, ::) or a name that resolves to one"
        ) from exc
    family, kind, proto, _, address = found[0]
    try:  # a port the system picks: the address is checked, not the port (uvicorn binds that)
        with socket.socket(family, kind, proto) as probe:
            probe.bind((address[0], 0, *address[2:]))
    except OSError as exc:
        raise InputError(
            f"--host {host!r} (CLEARSIGHT_HOST) cannot be bound here ({exc.strerror or exc}): "
            "give an address of this machine (127.0.0.1, 0.0.0.0 for every interface, ::)"
        ) from exc


def _check_data_dir(data_dir: Path) -> None:
    """Refuse a data folder the service cannot write: uploads, heatmaps, the review page's display
    PNGs and review sessions live there, and a session whose last use cannot be recorded ends at
    once (a sign-in loop).

    Raises:
        InputError: a part of it cannot be made or written.
    """
    for part in ("images", "heatmaps", "display", "sessions"):
        folder = Path(data_dir) / part
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise InputError(
                f"data folder {folder} cannot be written ({type(exc).__name__}: {exc.strerror or exc}); "
                "--data-dir must name a folder this service may write"
            ) from exc


def check_keys(settings: ServeSettings, *, warn: bool = True) -> KeyRing:
    """The configured keys; refuses to go on without them, or with a public or per-worker secret,
    unless ``insecure_dev`` is set. ``warn=False`` checks without logging what is weak (short keys,
    no authentication, a weak audit secret, cookies not marked Secure): for the workers of a
    ``clearsight serve`` that has said so once already.

    Raises:
        InputError: no API keys and no ``insecure_dev`` flag, or malformed keys; the public default
            ``audit_secret`` (a trader could compute which shipments random audits pick) without
            ``insecure_dev``; a ``session_secret`` shorter than :data:`MIN_SESSION_SECRET_CHARS`,
            empty included; several workers without a ``session_secret`` (each would sign review
            sessions with its own random key, so a session would work on one worker only).
    """
    keys = parse_api_keys(settings.api_keys.get_secret_value())
    if len(keys) == 0 and not settings.insecure_dev:
        raise InputError(
            "no API keys configured: set CLEARSIGHT_API_KEYS='role:key,...' (roles submitter, officer, "
            "admin), or pass the insecure development flag (--insecure-dev / CLEARSIGHT_INSECURE_DEV=1) "
            "to run WITHOUT authentication"
        )
    if len(keys) == 0 and warn:
        log.warning(
            "INSECURE: serving without authentication (insecure_dev is set); never do this in production"
        )
    if keys.short_keys and warn:
        log.warning(
            "API key(s) %s are shorter than %d characters: the audit trail names each key by 48 bits of "
            "its SHA-256, so anyone who reads it can test guesses at a short key offline; use random "
            "keys of %d or more characters (secrets.token_urlsafe(24) gives 32)",
            ", ".join(keys.short_keys),
            STRONG_KEY_CHARS,
            STRONG_KEY_CHARS,
        )
    if weak_audit_secret(settings):
        if not settings.insecure_dev:
            raise InputError(
                "audit_secret is the public development default or shorter than "
                f"{MIN_AUDIT_SECRET_CHARS} characters, so anyone could compute which shipments random "
                "audits pick: set CLEARSIGHT_AUDIT_SECRET to a long random secret "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        if warn:
            log.warning("INSECURE: random audits use a weak audit_secret (insecure_dev is set)")
    if warn and not settings.cookie_secure and settings.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "review sessions travel in cookies not marked Secure while serving on %s: behind HTTPS set "
            "CLEARSIGHT_COOKIE_SECURE=1",
            settings.host,
        )
    if settings.session_secret is not None and len(settings.session_secret) < MIN_SESSION_SECRET_CHARS:
        # an empty one (CLEARSIGHT_SESSION_SECRET= in a .env) was taken for none: each worker signed
        # sessions with a random key of its own, the check below passing
        raise InputError(
            f"session_secret (CLEARSIGHT_SESSION_SECRET) has {len(settings.session_secret)} characters; "
            f"set it to {MIN_SESSION_SECRET_CHARS} or more random ones (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`), the same for every worker, or unset it for a random "
            "key per start (one worker only)"
        )
    if settings.workers > 1 and settings.session_secret is None:
        raise InputError(
            f"{settings.workers} workers need a shared session_secret (CLEARSIGHT_SESSION_SECRET): "
            "otherwise each signs review sessions with its own random key and officers are signed "
            "out whenever a request reaches another worker"
        )
    return keys


def build_services(
    settings: ServeSettings,
    *,
    keys: KeyRing,
    metrics: Metrics,
    predictors: Mapping[str, Predictor] | None,
    audit: Any,
) -> Services:
    """Open everything the routes need: models, policy, audit store, one batcher per cargo type.

    Raises:
        ModelError / PolicyError / AuditError: from loading.
    """
    secret = (
        settings.session_secret.get_secret_value().encode()
        if settings.session_secret
        else secrets.token_bytes(32)
    )
    services = Services(
        settings=settings,
        keys=keys,
        signer=SessionSigner(
            secret,
            ttl_s=settings.session_ttl_s,
            idle_s=settings.session_idle_s,
            revoked_dir=settings.data_dir / "sessions",
        ),
        metrics=metrics,
        store=ImageStore(settings.data_dir),
        pixels=PixelBudget(settings.max_pixels_in_flight),
        # counted where every worker of this server sees them, as sessions are (data_dir/sessions)
        failed_keys=FailedAttempts(
            settings.auth_failures_per_minute,
            clock=time.time,
            failures=SharedFailures(settings.data_dir / "lockout.sqlite"),
        ),
    )
    services.predictors = (
        dict(predictors)
        if predictors is not None
        else _load_predictors(settings.models, runtime=settings.runtime)
    )
    services.policy = _load_policy(settings)
    loaded = {cargo: p.model_id for cargo, p in services.predictors.items()}
    services.policy.check_models(loaded)
    # a model whose cargo type the policy has no rules for: every shipment of it held, unsaid
    for warning in [*services.policy.warnings(), *services.policy.model_warnings(loaded)]:
        log.warning("%s", warning)
    services.traders = _load_register(settings, services.policy)
    services.audit = audit if audit is not None else _open_audit(settings)
    if audit is None:  # the whole trail read here, not under the write lock of the first decision
        services.audit.check_policy(services.policy.version, services.policy.sha256)
    for cargo_type, predictor in services.predictors.items():
        batcher = MicroBatcher(
            predictor,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000.0,
            queue_size=settings.queue_size,
            retry_after_s=settings.retry_after_s,
            observer=metrics.observe_batch,
        )
        services.batchers[cargo_type] = batcher
        metrics.queue_depth.labels(cargo_type).set_function(lambda b=batcher: b.depth)
    return services


def create_app(
    settings: ServeSettings,
    *,
    predictors: Mapping[str, Predictor] | None = None,
    audit: Any = None,
    keys: KeyRing | None = None,
) -> FastAPI:
    """Build the app. ``predictors`` (cargo type -> Predictor) and ``audit`` replace what the settings
    would load, which is how tests inject fakes; the caller keeps ownership of an injected audit store.
    ``keys``: what :func:`check_keys` returned to a caller that checked (and warned) already."""

    if keys is None:
        keys = check_keys(settings)  # before anything starts: no keys means no server
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, keys=keys, metrics=metrics, predictors=predictors, audit=audit)
        app.state.services = services
        log.info(
            "ready",
            extra={
                "models": sorted(p.model_id for p in services.predictors.values()),
                "runtime": settings.runtime,
                "policy_version": getattr(services.policy, "version", None),
            },
        )
        try:
            yield
        finally:
            for batcher in services.batchers.values():
                batcher.close()
            services.failed_keys.close()
            if audit is None and hasattr(services.audit, "close"):
                services.audit.close()

    app = FastAPI(
        title="Clearsight",
        version="1",
        summary="Anomaly scoring of cargo images and release-before-inspection decisions, audited.",
        lifespan=lifespan,
        # a map of the API for anyone who asks, and pages that fetch scripts from a CDN: only on request
        openapi_url="/openapi.json" if settings.api_docs else None,
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    problems.install(app)
    app.add_exception_handler(review.SignInFirst, review.sign_in_first)  # a form without a session
    for router in (score.router, shipments.router, models.router, health.router, review.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Added last = outermost: the request id exists before the body limit can refuse a request.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


def create_app_from_env() -> FastAPI:
    """uvicorn factory for ``--workers N``: each worker process reads its settings from ``CLEARSIGHT_*``.

    ``clearsight serve`` checked these settings and logged their warnings before starting the workers:
    each checks them again, but does not say them once more per worker."""
    settings = ServeSettings.load()
    return create_app(settings, keys=check_keys(settings, warn=False))
