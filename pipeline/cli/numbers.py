"""Numeric options read as typer reads them, with a value that is no number refused in the CLI's own
words: the option, the value given and what it accepts.

Typer reads a float option through pydantic and refused ``--target-miss-rate abc`` with "Invalid value
for '--target-miss-rate': Input should be a valid number, unable to parse string as a number", after a
usage line, naming neither the value nor the range. A value read here is read by the same pydantic
float, so every value typer accepted is accepted still (``nan``, ``1e-400``: the command's own checks
refuse those, naming the range)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from datasets.errors import InputError

__all__ = ["number"]

_FLOAT = TypeAdapter(float)


def number(flag: str, accepted: str) -> Callable[[Any], float]:
    """A ``typer.Option(parser=...)`` for the float option ``flag``: what pydantic reads as a float, or
    :class:`InputError` ``--flag 'abc' must be a number <accepted>`` (``accepted``: ``in (0, 1)``)."""

    def parse(value: Any) -> float:
        try:
            return _FLOAT.validate_python(value)
        except ValidationError:
            # an InputError, not a ValueError: pydantic would wrap that into typer's words again
            raise InputError(f"{flag} {str(value)!r} must be a number {accepted}") from None

    return parse
