"""The Hamming distance of two 64-bit hashes held as signed BIGINTs, computed by the database.

PostgreSQL counts the bits of their XOR with ``bit_count`` (PostgreSQL 14 or later). SQLite has
neither XOR nor a bit count, so each SQLite connection of the audit store registers one function,
``clearsight_hamming64`` (:func:`register_sqlite`). A near-copy lookup can then keep only the rows
within reach before it limits how many it reads.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["hamming64", "register_sqlite", "signed64"]

_SQLITE_NAME = "clearsight_hamming64"
_MASK = (1 << 64) - 1


class hamming64(FunctionElement):  # noqa: N801 - named as SQL functions are
    """``hamming64(a, b)``: bits in which two signed 64-bit integers differ."""

    type = Integer()
    inherit_cache = True
    name = "hamming64"


@compiles(hamming64, "postgresql")
def _postgresql(element: hamming64, compiler: Any, **kw: Any) -> str:
    a, b = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"bit_count(CAST(({a}) # ({b}) AS bit(64)))"


@compiles(hamming64, "sqlite")
def _sqlite(element: hamming64, compiler: Any, **kw: Any) -> str:
    a, b = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"{_SQLITE_NAME}({a}, {b})"


def _distance(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else ((a ^ b) & _MASK).bit_count()


def register_sqlite(dbapi_connection: Any) -> None:
    """Give one SQLite connection the function :class:`hamming64` compiles to."""
    dbapi_connection.create_function(_SQLITE_NAME, 2, _distance, deterministic=True)


def signed64(hex_digits: str) -> int:
    """16 hex digits as the signed 64-bit integer a BIGINT column holds."""
    value = int(hex_digits, 16)
    return value - (1 << 64) if value >= 1 << 63 else value
