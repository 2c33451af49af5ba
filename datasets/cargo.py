"""The cargo types Clearsight knows by name: the synthetic generator renders them, the packaged
policy decides them, and a dataset folder so named needs no ``--cargo-type``."""

from __future__ import annotations

__all__ = ["CARGO_TYPES"]

CARGO_TYPES: tuple[str, ...] = ("bulk_ore", "vacuum_pack")
