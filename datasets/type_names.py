"""Anomaly type names: the folders a model learns its types from, what its type head predicts, and
what an officer records as found. One rule for all of them, so that every type a model knows can be
recorded as a finding (a folder ``train/Foreign Object`` made a type the outcome form refused)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["TYPE_NAME_PATTERN", "TYPE_NAME_RULE", "is_type_name"]

TYPE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
"""A type name as a regular expression (pydantic's and FastAPI's ``pattern``)."""

TYPE_NAME_RULE = (
    "lower-case letters, digits and _, starting with a letter, at most 64 characters (e.g. foreign_object)"
)

_TYPE_NAME = re.compile(TYPE_NAME_PATTERN)


def is_type_name(value: Any) -> bool:
    """Whether ``value`` is a type name (:data:`TYPE_NAME_RULE`)."""
    return isinstance(value, str) and _TYPE_NAME.fullmatch(value) is not None
