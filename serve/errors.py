"""Errors that only exist over HTTP: authentication, missing resources, overload and deadlines.

They extend the shared hierarchy in :mod:`datasets.errors` so that one handler (``serve.problems``)
turns every Clearsight error into a problem body::

    InputError
    ├── NotAuthenticatedError   no API key, or one that matches no configured key (401)
    ├── PermissionDeniedError   a valid key whose role may not do this (403)
    │   ├── ShipmentTakenError  a shipment id first sent by a key this one may not send it again for
    │   └── TierNotAllowedError a submitter declaring an AEO tier
    ├── ConflictError           (datasets.errors) a shipment already decided on other inputs (409)
    │   ├── OutcomeExistsError  the decision has an outcome, and the new one does not say amend
    │   └── DecidedAgainError   the shipment was decided again since the decision the officer judged
    ├── NotFoundError           a shipment or file that does not exist (404)
    ├── RequestTooLargeError    a body over max_request_bytes or too many images (413)
    ├── RequestTimeoutError     a body that stalls or trickles (408)
    ├── UnsupportedMediaTypeError  a body of another type than the route reads (415)
    └── TooManyAttemptsError    too many wrong API keys from one address (429 + Retry-After)
    EngineError
    ├── OverloadedError         the scoring queue is full (503 + Retry-After)
    └── ScoringTimeoutError     scoring missed the request deadline (504)
"""

from __future__ import annotations

from datasets.errors import ConflictError, EngineError, InputError

__all__ = [
    "DecidedAgainError",
    "NotAuthenticatedError",
    "NotFoundError",
    "OutcomeExistsError",
    "OverloadedError",
    "PermissionDeniedError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ScoringTimeoutError",
    "ShipmentTakenError",
    "TierNotAllowedError",
    "TooManyAttemptsError",
    "UnsupportedMediaTypeError",
]


class NotAuthenticatedError(InputError):
    """No API key was sent, or it matches none of the configured keys."""


class PermissionDeniedError(InputError):
    """The key is valid but its role may not use this endpoint."""


class ShipmentTakenError(PermissionDeniedError):
    """A shipment id first sent under a key this one may not send that shipment again for."""


class TierNotAllowedError(PermissionDeniedError):
    """A submitter declared an AEO tier, which only the register (or an officer) gives."""


class OutcomeExistsError(ConflictError):
    """The decision has an outcome already, and the new one does not say it amends it."""


class DecidedAgainError(ConflictError):
    """The shipment was decided again since the decision the officer judged."""


class NotFoundError(InputError):
    """A shipment, model or stored file that does not exist."""


class RequestTooLargeError(InputError):
    """A request body over the byte limit, or more images than allowed."""


class RequestTimeoutError(InputError):
    """A request body that went too long without a byte, or arrived too slowly on average."""


class UnsupportedMediaTypeError(InputError):
    """A request body of another type than the endpoint reads (images come as multipart/form-data)."""


class TooManyAttemptsError(InputError):
    """Too many wrong API keys from one client address; it may try again after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OverloadedError(EngineError):
    """The scoring queue of a cargo type is full; the client should retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ScoringTimeoutError(EngineError):
    """Scoring did not finish within the per-request deadline."""
