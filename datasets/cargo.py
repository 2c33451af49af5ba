"""The cargo types Clearsight knows by name: the synthetic generator renders them, the packaged
policy decides them, and a dataset folder so named needs no ``--cargo-type``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CARGO_TYPES", "folder_cargo_type"]

CARGO_TYPES: tuple[str, ...] = ("bulk_ore", "vacuum_pack")


def folder_cargo_type(folder: str | Path) -> str | None:
    """The cargo type a dataset folder is named for (resolved: ``.`` or a link is its folder), or None."""
    name = Path(folder).resolve().name
    return name if name in CARGO_TYPES else None
