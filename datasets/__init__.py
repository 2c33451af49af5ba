"""Clearsight's data layer: image decoding, dataset formats, synthetic inspection data.

The lowest layer: it imports nothing from ``models``, ``pipeline`` or ``serve`` (nor torch).

- :func:`decode_image` turns a file or upload into pixels, bounded and strict
  (``datasets.decode``);
- :func:`read_mvtec` reads the MVTec AD folder layout (``datasets.mvtec``);
- :func:`iter_manifest` / :func:`write_manifest` read and write inspection-archive manifests
  (``datasets.manifest``);
- :func:`iter_image_paths` expands files, folders and globs for scoring (``datasets.folder``);
- the error hierarchy every layer raises (``datasets.errors``).
"""

from __future__ import annotations

from datasets.decode import (
    ACCEPTED_FORMATS,
    DecodedImage,
    DecodeLimits,
    decode_image,
    read_image_size,
    to_float_rgb,
)
from datasets.errors import (
    ArtifactError,
    AuditError,
    CargoTypeError,
    ClearsightError,
    DatasetFormatError,
    EngineError,
    ExportError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    ModelError,
    PolicyError,
    SchemaVersionError,
    UnsafePathError,
    WeightsError,
)
from datasets.folder import (
    IMAGE_EXTENSIONS,
    MANIFEST_EXTENSIONS,
    is_image_file,
    is_manifest,
    iter_image_paths,
)
from datasets.manifest import ManifestRow, iter_manifest, read_manifest, write_manifest
from datasets.mvtec import DatasetItem, MvtecDataset, read_mvtec

__all__ = [
    "ACCEPTED_FORMATS",
    "IMAGE_EXTENSIONS",
    "MANIFEST_EXTENSIONS",
    "ArtifactError",
    "AuditError",
    "CargoTypeError",
    "ClearsightError",
    "DatasetFormatError",
    "DatasetItem",
    "DecodeLimits",
    "DecodedImage",
    "EngineError",
    "ExportError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "InputError",
    "ManifestRow",
    "ModelError",
    "MvtecDataset",
    "PolicyError",
    "SchemaVersionError",
    "UnsafePathError",
    "WeightsError",
    "decode_image",
    "is_image_file",
    "is_manifest",
    "iter_image_paths",
    "iter_manifest",
    "read_image_size",
    "read_manifest",
    "read_mvtec",
    "to_float_rgb",
    "write_manifest",
]
