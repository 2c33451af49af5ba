"""The register of trusted traders (AEO): which tier each trader holds, as the customs authority keeps it.

A trader's AEO tier lowers scrutiny (the policy's ``trusted_traders`` offsets), so the service takes it
from the authority's register, not from the declaration of whoever submits the shipment. The register
is a CSV file with a header row naming at least ``trader_id`` and ``aeo_tier`` (other columns, a
trader's name say, are ignored)::

    trader_id,aeo_tier
    CN-TRADER-42,AEOS
    DE-TRADER-7,AEOF
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import InputError

__all__ = ["MAX_REGISTER_BYTES", "TraderRegister", "read_trader_register"]

MAX_REGISTER_BYTES = 64 * 1024 * 1024
"""Largest register file read (a national register holds some tens of thousands of traders)."""

_COLUMNS = ("trader_id", "aeo_tier")
# the Declaration's own bounds, so that every registered trader can be declared
_MAX_ID, _MAX_TIER = 128, 32


@dataclass(frozen=True)
class TraderRegister:
    """Registered traders: ``tiers`` maps a trader id to its AEO tier; ``source`` names the file."""

    tiers: Mapping[str, str]
    source: str

    def tier_of(self, trader_id: str | None) -> str | None:
        """The registered tier of ``trader_id``; None for an unregistered trader or no id."""
        return self.tiers.get(trader_id) if trader_id else None


def read_trader_register(path: str | Path) -> TraderRegister:
    """Read and check a register file.

    Raises:
        InputError: the file is missing, unreadable, over :data:`MAX_REGISTER_BYTES`, not UTF-8, or
            lacks a column; a row with an empty or over-long id or tier; a trader listed twice.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_REGISTER_BYTES:
            raise InputError(
                f"trader register {path} is {size:,} bytes; at most {MAX_REGISTER_BYTES:,} are read"
            )
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read the trader register {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(
            f"trader register {path} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"trader register {path} lacks the column(s) {', '.join(missing)}; its header must name "
            f"{' and '.join(_COLUMNS)} (found: {', '.join(header) or 'no header'})"
        )
    reader.fieldnames = header
    tiers: dict[str, str] = {}
    for row in reader:
        where = f"trader register {path}, line {reader.line_num}"
        trader, tier = (str(row.get(c) or "").strip() for c in _COLUMNS)
        if not trader or not tier:
            raise InputError(f"{where}: trader_id and aeo_tier must both be given (got {trader!r}, {tier!r})")
        if len(trader) > _MAX_ID or len(tier) > _MAX_TIER:
            raise InputError(
                f"{where}: trader_id is at most {_MAX_ID} characters and aeo_tier at most {_MAX_TIER}"
            )
        if trader in tiers:
            raise InputError(f"{where}: trader {trader!r} is listed twice")
        tiers[trader] = tier
    return TraderRegister(tiers=tiers, source=str(path))
