"""Which model scores which image: one predictor per cargo type, never a guess."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from datasets.errors import CargoTypeError
from models.inference import Predictor

__all__ = ["ModelRouter", "Route", "two_models"]


class Route(NamedTuple):
    """Where one image goes: a predictor, or the reason it has none (an error row)."""

    cargo_type: str | None
    predictor: Predictor | None
    error: str | None


def two_models(cargo_type: str | None, first: str, second: str) -> CargoTypeError:
    """The error for two models of one cargo type (a scorer routes each image to one)."""
    return CargoTypeError(
        f"two models for cargo type {cargo_type!r}: {first!r} and {second!r}; give one model per cargo type"
    )


class ModelRouter:
    """Maps cargo types to the loaded predictors.

    Args:
        predictors: at least one; their ``cargo_type`` values must be distinct.

    Raises:
        CargoTypeError: no predictor, or two predictors for one cargo type.
    """

    def __init__(self, predictors: Sequence[Predictor]) -> None:
        if not predictors:
            raise CargoTypeError("no model given: pass at least one --model MODEL_DIR")
        by_type: dict[str, Predictor] = {}
        for predictor in predictors:
            kind = predictor.cargo_type
            if kind in by_type:
                raise two_models(kind, by_type[kind].model_id, predictor.model_id)
            by_type[kind] = predictor
        self._by_type = by_type

    @property
    def cargo_types(self) -> list[str]:
        """The loaded cargo types, sorted."""
        return sorted(self._by_type)

    @property
    def predictors(self) -> list[Predictor]:
        """The loaded predictors, in cargo-type order."""
        return [self._by_type[kind] for kind in self.cargo_types]

    def route(self, cargo_type: str | None) -> Route:
        """The predictor for ``cargo_type``; with ``None`` and exactly one model, that model.

        An unknown or missing cargo type gives a route with ``error`` set (it becomes an error
        row, so that one bad manifest line does not stop an archive run).
        """
        loaded = ", ".join(repr(kind) for kind in self.cargo_types)
        if cargo_type is None:
            if len(self._by_type) == 1:
                (only,) = self._by_type.values()
                return Route(only.cargo_type, only, None)
            return Route(
                None,
                None,
                f"no cargo type for this image and {len(self._by_type)} models loaded ({loaded}); "
                "give it in the manifest or with --cargo-type",
            )
        predictor = self._by_type.get(cargo_type)
        if predictor is None:
            return Route(cargo_type, None, f"no model for cargo type {cargo_type!r}; loaded: {loaded}")
        return Route(cargo_type, predictor, None)
