"""The register of trusted traders (AEO): which tier each trader holds, as the customs authority keeps it.

A trader's AEO tier lowers scrutiny (the policy's ``trusted_traders`` factors), so the service takes it
from the authority's register, not from the declaration of whoever submits the shipment (and batch
decisions do with ``--trader-register``); and since a
submitter names the trader, the register also says which submitters' keys send that trader's
shipments (``submitters``: the keys' names, as the service records them, separated by spaces).
Another key naming the trader gets no tier. The register is a CSV file with a header row naming
``trader_id`` and ``aeo_tier``, and ``submitters`` (other columns, a trader's name say, are ignored)::

    trader_id,aeo_tier,submitters
    CN-TRADER-42,AEOS,submitter:3f2a9c1b0d4e
    DE-TRADER-7,AEOF,submitter:3f2a9c1b0d4e submitter:91c0e7d2aa10

A key's name is its role and the first 12 hex digits of its SHA-256 (``submitter:`` +
``sha256(key)[:12]``), as in the audit trail's ``submitted_by`` and the access log.

A batch run reads the register once; the service watches its file (:class:`RegisterFile`), so that
the authority's changes (a tier withdrawn, a key added) take effect without a restart.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets.errors import InputError

__all__ = ["MAX_REGISTER_BYTES", "RegisterFile", "TraderRegister", "check_tiers", "read_trader_register"]

log = logging.getLogger("clearsight.trader_register")  # the service's JSON log and the CLI's Warning: lines

MAX_REGISTER_BYTES = 64 * 1024 * 1024
"""Largest register file read (a national register holds some tens of thousands of traders)."""

_COLUMNS = ("trader_id", "aeo_tier")
_SUBMITTERS = "submitters"
_KEY_NAME = re.compile(r"[a-z]+:[0-9a-f]{12}")
# the Declaration's own bounds, so that every registered trader can be declared
_MAX_ID, _MAX_TIER = 128, 32


@dataclass(frozen=True)
class TraderRegister:
    """Registered traders: ``tiers`` maps a trader id to its AEO tier, ``submitters`` to the names of
    the keys that send its shipments; ``source`` names the file."""

    tiers: Mapping[str, str]
    submitters: Mapping[str, frozenset[str]]
    source: str

    def tier_of(self, trader_id: str | None) -> str | None:
        """The registered tier of ``trader_id``; None for an unregistered trader or no id."""
        return self.tiers.get(trader_id) if trader_id else None

    @functools.cached_property
    def _traders_by_key(self) -> dict[str, frozenset[str]]:
        # built once: a submission asks for a key's traders, a register holds tens of thousands
        found: dict[str, set[str]] = {}
        for trader, keys in self.submitters.items():
            for key in keys:
                found.setdefault(key, set()).add(trader)
        return {key: frozenset(traders) for key, traders in found.items()}

    def traders_of(self, submitter: str) -> frozenset[str]:
        """The traders whose shipments the key named ``submitter`` sends."""
        return self._traders_by_key.get(submitter, frozenset())

    def tier_for(self, trader_id: str | None, submitter: str) -> str | None:
        """The tier a shipment of ``trader_id`` sent by the key named ``submitter`` is decided under:
        the registered one when that key sends the trader's shipments, else None."""
        if not trader_id or submitter not in self.submitters.get(trader_id, frozenset()):
            return None
        return self.tiers.get(trader_id)


def read_trader_register(path: str | Path) -> TraderRegister:
    """Read and check a register file.

    Raises:
        InputError: the file is missing, unreadable, over :data:`MAX_REGISTER_BYTES`, not UTF-8, or
            lacks a column or names one twice; a row with an empty or over-long id or tier; a trader
            listed twice.
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
    try:  # the header is read as a row is: either may hold a quote left open
        return _read_rows(reader, path)
    except csv.Error as exc:  # an unclosed quote, a field over the csv module's limit
        where = f"trader register {path}, after line {reader.line_num}"
        raise InputError(f"{where}: malformed CSV ({exc})") from exc


def _read_rows(reader: csv.DictReader[str], path: Path) -> TraderRegister:
    header = [name.strip() for name in reader.fieldnames or []]
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if twice:  # a row read into a dict keeps the last: a tier, or a trader, other than the first column's
        raise InputError(
            f"trader register {path}, line {reader.line_num}: duplicate column {twice[0]!r}; each column "
            "is named once"
        )
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"trader register {path} lacks the column(s) {', '.join(missing)}; its header must name "
            f"{' and '.join(_COLUMNS)} (found: {', '.join(header) or 'no header'})"
        )
    reader.fieldnames = header
    tiers: dict[str, str] = {}
    submitters: dict[str, frozenset[str]] = {}
    for row in reader:
        _read_row(row, f"trader register {path}, line {reader.line_num}", tiers, submitters)
    return TraderRegister(tiers=tiers, submitters=submitters, source=str(path))


def _read_row(
    row: Mapping[str, Any], where: str, tiers: dict[str, str], submitters: dict[str, frozenset[str]]
) -> None:
    """One register row into ``tiers`` and ``submitters``.

    Raises:
        InputError: naming ``where``.
    """
    trader, tier = (str(row.get(c) or "").strip() for c in _COLUMNS)
    if not trader or not tier:
        raise InputError(f"{where}: trader_id and aeo_tier must both be given (got {trader!r}, {tier!r})")
    if len(trader) > _MAX_ID or len(tier) > _MAX_TIER:
        raise InputError(
            f"{where}: trader_id is at most {_MAX_ID} characters and aeo_tier at most {_MAX_TIER}"
        )
    if trader in tiers:
        raise InputError(f"{where}: trader {trader!r} is listed twice")
    names = str(row.get(_SUBMITTERS) or "").split()
    bad = [name for name in names if not _KEY_NAME.fullmatch(name)]
    if bad:  # not echoed: it may be a key itself, put where its name belongs
        raise InputError(
            f"{where}: submitters holds {len(bad)} value(s) that are not a key's name (role:12 hex "
            "digits, e.g. submitter:3f2a9c1b0d4e); a key itself never goes in the register"
        )
    tiers[trader] = tier
    submitters[trader] = frozenset(names)


def check_tiers(register: TraderRegister, policy: Any) -> None:
    """Refuse a register giving a tier the policy does not list (a typo such as ``aeof`` would
    silently give that trader none).

    Raises:
        InputError: naming the unknown tiers and the policy's.
    """
    unknown = sorted(set(register.tiers.values()) - set(policy.trusted_traders))
    if unknown:
        known = ", ".join(sorted(policy.trusted_traders)) or "none"
        raise InputError(
            f"trader register {register.source} gives tier(s) {', '.join(map(repr, unknown))} that policy "
            f"{policy.version} does not know (it lists {known}): "
            "correct the register, or list the tier under the policy's trusted_traders "
            "(release_odds_factor: 1 for no change)"
        )


class RegisterFile:
    """A long-running service's register: the file is read again when it changes (its inode, size or
    modification time), at the first submission after the change, so that a tier the authority
    withdraws, or a key it adds, takes effect without a restart.

    A change that does not read, or that ``check`` refuses (a tier the policy does not know), is
    logged as an error, and until the file is corrected no shipment gets a registered tier: the
    stricter way round, since a tier lowers scrutiny. The first reading must succeed.

    Raises:
        InputError: from the first reading, or from ``check`` of it.
    """

    def __init__(self, path: str | Path, *, check: Callable[[TraderRegister], None] | None = None) -> None:
        self.path = Path(path)
        self._check = check or (lambda register: None)
        self._lock = threading.Lock()
        signature = self._signature()
        register = read_trader_register(self.path)
        self._check(register)
        _warn_without_submitters(register)
        self._state: tuple[tuple[int, ...] | None, TraderRegister | None] = (signature, register)

    def _signature(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> TraderRegister | None:
        """The register as the file holds it now; None while a change to it does not read."""
        signature = self._signature()
        seen, register = self._state
        if signature == seen:
            return register
        with self._lock:  # one reading per change, however many requests notice it
            seen, register = self._state
            if signature == seen:
                return register
            try:
                register = read_trader_register(self.path)
                self._check(register)
            except InputError as exc:
                log.error(
                    "the trader register changed and does not read (%s): until it is corrected, no "
                    "shipment is decided under a registered AEO tier",
                    exc,
                )
                register = None
            if self._signature() != signature:
                # written to while read: perhaps a part of it, which can read as a whole register
                # (a broker's key listed for one of its two traders); nothing, until it settles
                log.warning(
                    "the trader register %s changed while it was read: replace it by renaming a "
                    "complete file into place, not by writing over it",
                    self.path,
                )
                return None
            if register is not None:
                log.warning("trader register %s read again: %d traders", self.path, len(register.tiers))
                _warn_without_submitters(register)
            self._state = (signature, register)
            return register


def _warn_without_submitters(register: TraderRegister) -> None:
    if not any(register.submitters.values()):
        log.warning(
            "trader register %s names no submitter keys (column submitters): submitters' shipments are "
            "decided without any AEO tier",
            register.source,
        )
