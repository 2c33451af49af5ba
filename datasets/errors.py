"""Clearsight's error hierarchy, shared by every layer.

It lives in ``datasets`` because that is the lowest layer: every other package may import it, and
none of its classes depend on anything above it.

::

    ClearsightError
    ├── InputError                  bad input from a user or a client (HTTP 4xx)
    │   ├── ImageDecodeError        a file or upload that is not a usable image
    │   │   └── ImageTooLargeError  over the byte or pixel limit (refused before decoding)
    │   ├── DatasetFormatError      a dataset folder or manifest that breaks the layout rules
    │   ├── UnsafePathError         a path that escapes the folder it must stay in
    │   ├── CargoTypeError          a cargo type no model or policy knows
    │   └── ConflictError           contradicts what is already recorded (a shipment decided once)
    ├── ModelError                  a model that cannot be built, loaded or run (fails closed)
    │   ├── ArtifactError           a model directory that is missing, truncated or tampered with
    │   ├── WeightsError            pretrained weights that are absent or do not match their spec
    │   └── ExportError             an export whose outputs disagree with PyTorch
    ├── PolicyError                 a decision policy that does not validate
    ├── AuditError                  the audit store cannot be opened, written or verified
    │   └── SchemaVersionError      a database created by another schema version
    └── EngineError                 an execution engine (e.g. Ray) that is unavailable or failed

Every message names the bad value and what would be accepted. Third-party exceptions (OpenCV,
PIL, SQLAlchemy, ONNX Runtime) are caught where they are raised and re-raised as one of these,
with the original chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "AuditError",
    "CargoTypeError",
    "ClearsightError",
    "ConflictError",
    "DatasetFormatError",
    "EngineError",
    "ExportError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "InputError",
    "ModelError",
    "PolicyError",
    "SchemaVersionError",
    "UnsafePathError",
    "WeightsError",
]


class ClearsightError(Exception):
    """Base of every error Clearsight raises on purpose."""


class InputError(ClearsightError):
    """Input from a user or client that Clearsight cannot accept."""


class ImageDecodeError(InputError):
    """A file or upload that cannot be decoded into an image.

    ``source`` names the file (or ``"<bytes>"``/the upload's name) so that a batch report can say
    which image failed; ``sha256`` is the hex digest of its bytes when they were read whole (None
    for a file too large or unreadable).
    """

    def __init__(self, message: str, *, source: str = "<bytes>") -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.reason = message
        self.sha256: str | None = None


class ImageTooLargeError(ImageDecodeError):
    """An image over the configured byte or pixel limit, refused before it is decoded."""


class DatasetFormatError(InputError):
    """A dataset folder or manifest that breaks the layout or validation rules."""


class UnsafePathError(InputError):
    """A path that resolves outside the folder it must stay inside."""


class ConflictError(InputError):
    """A request that contradicts what is already recorded: a shipment that was decided on other
    images or another declaration, submitted again for a new decision."""


class CargoTypeError(InputError):
    """A cargo type that no loaded model or policy knows."""


class ModelError(ClearsightError):
    """A model that cannot be built, loaded or run."""


class ArtifactError(ModelError):
    """A model directory that is missing files, truncated, or fails its hash check."""


class WeightsError(ModelError):
    """Pretrained weights that are absent or do not match their spec."""


class ExportError(ModelError):
    """An exported model whose outputs disagree with the PyTorch model."""


class PolicyError(ClearsightError):
    """A decision policy that does not validate."""


class AuditError(ClearsightError):
    """The audit store cannot be opened, written or verified."""


class SchemaVersionError(AuditError):
    """A database whose schema version is not the one this Clearsight writes."""


class EngineError(ClearsightError):
    """An execution engine that is unavailable or failed."""
