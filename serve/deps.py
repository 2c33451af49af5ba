"""What a route needs, as ``Annotated`` dependency aliases: the services, the audit store, the caller.

:class:`Services` is built once in the app's lifespan and hung on ``app.state.services``; routes take
``ServicesDep``, ``AuditDep``, ``PredictorsDep`` and one of the role aliases (``SubmitterDep``,
``OfficerDep``, ``AdminDep``), which authenticate the ``Authorization: Bearer`` or ``X-API-Key``
header and check the role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from datasets.errors import InputError
from datasets.json_text import loads_strict
from models.inference import Predictor
from serve.auth import KeyRing, Principal, Role, SessionSigner
from serve.batching import MicroBatcher
from serve.errors import NotAuthenticatedError, PermissionDeniedError, UnsupportedMediaTypeError
from serve.lockout import FailedAttempts
from serve.metrics import Metrics
from serve.pixel_budget import PixelBudget
from serve.settings import ServeSettings
from serve.storage import ImageStore

__all__ = [
    "AdminDep",
    "AuditDep",
    "JsonBodyDep",
    "MetricsReaderDep",
    "MultipartDep",
    "OfficerDep",
    "PredictorsDep",
    "Services",
    "ServicesDep",
    "SubmitterDep",
    "authenticate",
    "check_role",
    "client_address",
    "principal_from_headers",
]

INSECURE_PRINCIPAL = Principal(role=Role.ADMIN, fingerprint="insecure-dev")


@dataclass
class Services:
    """Everything the routes share; built in the lifespan, closed at shutdown."""

    settings: ServeSettings
    keys: KeyRing
    signer: SessionSigner
    metrics: Metrics
    store: ImageStore
    pixels: PixelBudget
    failed_keys: FailedAttempts
    predictors: dict[str, Predictor] = field(default_factory=dict)
    batchers: dict[str, MicroBatcher] = field(default_factory=dict)
    policy: Any = None  # pipeline.policy.Policy
    traders: Any = None  # pipeline.trader_register.RegisterFile, or None without a register
    audit: Any = None  # pipeline.audit.AuditStore

    @property
    def insecure(self) -> bool:
        """True when the server runs without keys (only possible with ``insecure_dev``)."""
        return len(self.keys) == 0 and self.settings.insecure_dev

    def register(self) -> Any:
        """The trader register as its file holds it now (a ``TraderRegister``), or None: without
        one, or while a change to it does not read. Read once per request."""
        return self.traders.current() if self.traders is not None else None


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def _predictors(services: ServicesDep) -> Mapping[str, Predictor]:
    return services.predictors


def _audit(services: ServicesDep) -> Any:
    return services.audit


PredictorsDep = Annotated[Mapping[str, Predictor], Depends(_predictors)]
AuditDep = Annotated[Any, Depends(_audit)]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")


def client_address(request: Request) -> str:
    """The address a request came from: its connection's peer, or, from a proxy named in
    ``forwarded_allow_ips``, the client that proxy put in X-Forwarded-For (uvicorn has rewritten
    ``request.client`` by then; see :func:`serve.cli.uvicorn_options`)."""
    return request.client.host if request.client is not None else "unknown"


def authenticate(services: Services, key: str, client: str) -> Principal | None:
    """The key's principal, or None for a wrong key, which counts against ``client``.

    Raises:
        TooManyAttemptsError: ``client`` sent too many wrong keys lately (even if this one is right:
            a guesser must not learn that it found the key by being let in).
    """
    principal = services.keys.authenticate(key)
    if principal is None:
        # refused or counted in one step: a check before and a count after let concurrent wrong
        # keys from one address all pass while its count was one short of the limit
        services.failed_keys.failed(client)
    else:
        services.failed_keys.check(client)
    return principal


def principal_from_headers(
    services: Services, bearer: str | None, api_key: str | None, *, client: str = "unknown"
) -> Principal:
    """Authenticate a request's key.

    Raises:
        NotAuthenticatedError: no key, or one that matches no configured key.
        TooManyAttemptsError: ``client`` sent too many wrong keys lately.
    """
    if services.insecure:
        return INSECURE_PRINCIPAL
    key = bearer or api_key
    if not key:
        raise NotAuthenticatedError("no API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    principal = authenticate(services, key, client)
    if principal is None:
        raise NotAuthenticatedError("the API key matches no configured key")
    return principal


def check_role(principal: Principal, roles: Iterable[Role]) -> None:
    """Admit ``principal`` only in one of ``roles`` (admin always).

    Raises:
        PermissionDeniedError: naming the caller's role and the roles allowed.
    """
    allowed = {*roles, Role.ADMIN}
    if principal.role not in allowed:
        names = ", ".join(sorted(r.value for r in allowed))
        raise PermissionDeniedError(f"role {principal.role.value!r} may not do this; allowed roles: {names}")


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency that authenticates the caller and admits only ``roles`` (admin always)."""

    def dependency(
        request: Request,
        services: ServicesDep,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key)],
    ) -> Principal:
        principal = principal_from_headers(
            services, bearer.credentials if bearer else None, api_key, client=client_address(request)
        )
        request.state.principal = principal.name  # the access log says who asked
        check_role(principal, roles)
        return principal

    return dependency


SubmitterDep = Annotated[Principal, Depends(require(Role.SUBMITTER))]
OfficerDep = Annotated[Principal, Depends(require(Role.OFFICER))]
AdminDep = Annotated[Principal, Depends(require())]


def _metrics_reader(
    request: Request,
    services: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal | None:
    if services.settings.metrics_public:
        return None
    principal = principal_from_headers(
        services, bearer.credentials if bearer else None, api_key, client=client_address(request)
    )
    if principal.role is Role.SUBMITTER:  # decisions by tier and the score histograms are officers'
        raise PermissionDeniedError("role 'submitter' may not do this; allowed roles: admin, officer")
    return principal


MetricsReaderDep = Annotated[Principal | None, Depends(_metrics_reader)]


def _multipart(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            f"content type {content_type[:100] or 'none'!r} is not accepted here; send multipart/form-data "
            "with the images as 'images' file fields (curl -F images=@scan.png ...)"
        )


MultipartDep = Annotated[None, Depends(_multipart)]
"""Refuses, before the form is parsed, a body that is not multipart/form-data (415, not a 422 that
says a field is missing)."""


async def _json_body(request: Request) -> None:
    # what FastAPI reads as JSON (strictly: a body without a type is not)
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    json = media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    empty = not media_type and request.headers.get("content-length", "0") == "0"
    if not json and not (empty and "transfer-encoding" not in request.headers):  # none: 422 body required
        raise UnsupportedMediaTypeError(
            f"content type {content_type[:100] or 'none'!r} is not accepted here; send JSON as "
            'application/json (curl --json \'{"found": "clean"}\' ...)'
        )
    body = await request.body()  # read already, by FastAPI, which parsed it keeping the last of a key
    if json and body:
        try:
            loads_strict(body)
        except ValueError as exc:  # a key given twice (named): malformed JSON was refused before this
            raise InputError(f"body is not valid: {exc}") from exc


JsonBodyDep = Annotated[None, Depends(_json_body)]
"""Refuses, before the body is validated, one that is not JSON (415, not a 422 that says the body
is not an object): an outcome sent as a form, or as JSON labelled text/plain; and one naming a key
twice in one object (422 bad-input), which FastAPI's reader took as its last copy:
``{"found": "foreign_object", "found": "clean"}`` was recorded clean."""
