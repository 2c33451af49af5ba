"""A small model registry: named builders, refused duplicates, no discovery magic.

Builders register themselves with :func:`register_model` when their module is imported
(``models.backbones`` imports all of its families). ``create_model(name, weights=..., **kw)`` calls
the builder with keyword-only arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from datasets.errors import ModelError

__all__ = ["create_model", "list_models", "register_model"]

_BUILDERS: dict[str, Callable[..., Any]] = {}

F = TypeVar("F", bound=Callable[..., Any])


def register_model(name: str) -> Callable[[F], F]:
    """Decorator that registers a keyword-only builder under ``name``; duplicates are refused."""

    def decorate(builder: F) -> F:
        if name in _BUILDERS:
            raise ModelError(f"model name {name!r} is already registered; pick another name")
        _BUILDERS[name] = builder
        return builder

    return decorate


def create_model(name: str, *, weights: Any = "pretrained", **kwargs: Any) -> Any:
    """Build the registered model ``name``.

    Args:
        name: one of :func:`list_models`.
        weights: ``"pretrained"`` (the builder's default weights spec), ``"random"`` (random init;
            warns), or a path to a local weights file.
        **kwargs: passed to the builder.
    """
    if name not in _BUILDERS:
        raise ModelError(f"unknown model {name!r}; registered models are {list_models()}")
    return _BUILDERS[name](weights=weights, **kwargs)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)
