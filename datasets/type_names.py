"""Anomaly type names: the folders a model learns its types from, what its type head predicts, and
what an officer records as found. One rule for all of them, so that every type a model knows can be
recorded as a finding (a folder ``train/Foreign Object`` made a type the outcome form refused), and
none that training keeps for the pseudo-anomaly classes it makes (:data:`PSEUDO_PREFIX`)."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PSEUDO_PREFIX", "TYPE_NAME_PATTERN", "TYPE_NAME_RULE", "is_type_name"]

PSEUDO_PREFIX = "synthetic_"
"""What training puts before the name of each synthetic (pseudo-anomaly) class it trains on. A type
folder named so (``train/synthetic_rubber``) was taken for one: scored as "unknown" whatever its
probability, and left out of what an officer may record as found."""

TYPE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
"""A type name as a regular expression (pydantic's and FastAPI's ``pattern``). It cannot say "not
starting with :data:`PSEUDO_PREFIX`" (pydantic's regular expressions have no look-ahead):
:func:`is_type_name` does."""

TYPE_NAME_RULE = (
    "lower-case letters, digits and _, starting with a letter, at most 64 characters (e.g. foreign_object), "
    f"not starting with {PSEUDO_PREFIX} (kept for the synthetic classes training makes)"
)

_TYPE_NAME = re.compile(TYPE_NAME_PATTERN)


def is_type_name(value: Any) -> bool:
    """Whether ``value`` is a type name (:data:`TYPE_NAME_RULE`)."""
    return (
        isinstance(value, str)
        and _TYPE_NAME.fullmatch(value) is not None
        and not value.startswith(PSEUDO_PREFIX)
    )
