"""After scoring: group the output's rows by shipment, decide each, write and audit the decisions.

Decisions are made from the finished output file (not from the run's memory), so a resumed run
decides over every image exactly once. Audit records carry an idempotency key derived from the
shipment's inputs, so deciding again after a crash does not record a shipment twice.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from datasets.errors import ClearsightError, InputError
from datasets.regular_files import open_regular
from datasets.whole_files import keep_mode_and_owner, temporary_beside
from pipeline import verdict_rows
from pipeline.row_seal import untrusted
from pipeline.score.summary import ScoreSummary
from pipeline.score.writer import OUTPUT_SUFFIXES, iter_rows
from pipeline.verdicts import ImageVerdict, ShipmentDecision

if TYPE_CHECKING:
    from pipeline.audit import AuditStore
    from pipeline.audit.seal import SealKey
    from pipeline.policy import Policy
    from pipeline.trader_register import TraderRegister

__all__ = ["decide_output", "decisions_path", "load_policy_file", "made_by_this_run"]


def decisions_path(out: Path) -> Path:
    """Default ``--decisions`` file of the score output ``out``: ``X.decisions.jsonl`` for ``X.jsonl``
    where X is no output's name itself (does not end in ``.jsonl``, ``.csv`` or ``.parquet``, in any
    case), OUT's whole name and ``.decisions.jsonl`` for any other (``rows.csv.decisions.jsonl``,
    ``rows.csv.jsonl.decisions.jsonl``).

    Each output has its own: ``rows.jsonl``, ``rows.csv`` and ``rows.parquet`` shared
    ``rows.decisions.jsonl``, and an ``--overwrite --policy`` run into one replaced another's
    decisions. Only ``.jsonl`` itself drops its suffix: ``rows.JSONL``'s, named so, would be
    ``rows.jsonl``'s file on a file system that tells the two names apart; and ``rows.csv.jsonl``'s,
    named so, would be ``rows.csv``'s. Told apart so, no two output names give one file."""
    stem = Path(out.stem)
    if out.suffix == ".jsonl" and stem.suffix.lower() not in OUTPUT_SUFFIXES:
        return out.with_suffix(".decisions.jsonl")
    return out.with_name(f"{out.name}.decisions.jsonl")


def made_by_this_run(decisions: Path, out: Path, policy: Policy) -> bool:
    """Whether the existing ``decisions`` file is the one a run into ``out`` under ``policy`` wrote
    (``--resume`` writes it again): empty, or every decision in it made under this very policy, of a
    shipment with rows in ``out``. Another run's decisions (a file two runs shared through
    ``--decisions``), or a what-if kept under another policy, is not this run's."""
    shipments: set[str] = set()
    try:
        # a regular file only: a FIFO put at its name blocked the run forever, a link to /dev/zero
        # was read as one line without end; neither is a file a run wrote
        with io.BufferedReader(open_regular(decisions)) as fh:
            for line in fh:
                if not line.strip():
                    continue
                decision = json.loads(line)
                # a refused decision's line holds the standing one (another policy's, maybe), and
                # this run's policy in its marker
                made = (decision.get("refused") or decision)["policy_sha256"]
                if made != policy.sha256:
                    return False
                shipments.add(str(decision["shipment_id"]))
    except (OSError, ValueError, TypeError, KeyError):
        return False
    if not shipments:
        return True
    if not out.is_file():
        return False
    try:
        for row in iter_rows(out):
            shipments.discard(str(row.shipment_id or row.declaration.get("shipment_id")))
            if not shipments:
                return True
    except ClearsightError:
        return False
    return False


def load_policy_file(path: Path) -> Policy:
    """Load a decision policy with ``pipeline.policy.load_policy`` (imported only when asked for).

    Raises:
        PolicyError: the file is missing or does not validate.
    """
    from pipeline.policy import load_policy

    return load_policy(path)


def _cannot_write(decisions: Path, exc: OSError) -> InputError:
    return InputError(f"--decisions {str(decisions)!r}: cannot write it ({exc.strerror or exc})")


def _open_audit(url: str, seal_key: SealKey | None) -> AuditStore:
    from pipeline.audit import AuditStore

    return AuditStore.open(url, seal_key=seal_key, option="--audit-db")  # clearsight score's


def _not_the_run_s(out: Path, why: str) -> InputError:
    return InputError(
        f"output {str(out)!r}: {why}; these are not the rows this run wrote, and nothing was decided or "
        "recorded; score the inputs again into an --out no one else can write"
    )


def _rows_of_the_run(out: Path, summary: ScoreSummary, completion_key: bytes | None) -> list[ImageVerdict]:
    """The rows of ``out``, refused unless they are the ones the run of ``summary`` wrote: read from
    one open file (:class:`~pipeline.score.completion.OpenRows`) that is the file the run wrote (its
    device and inode, :attr:`ScoreSummary.rows_file`: rows renamed over ``out`` since are another
    file), whose bytes are those the completion record the run wrote vouches for, under its seal
    with ``completion_key``, naming the run (as ``clearsight decide`` checks them: rows edited in that
    file, or its record written again), and each naming the run (:attr:`ScoreSummary.run_id`). A run
    that wrote no record (:attr:`ScoreSummary.completed`) has no bytes to check them against, and a
    record there is not its own: the file and the run id are checked.

    Raises:
        InputError: rows that are not the run's, naming the file and why.
    """
    from pipeline.score.completion import OpenRows, RowsChanged

    if summary.rows_file is None:
        raise _not_the_run_s(out, "the summary given names no file a score run wrote (not score_to_file's)")
    try:
        opened = OpenRows(out)
    except OSError as exc:
        raise _not_the_run_s(out, f"it cannot be read ({exc.strerror or exc})") from exc
    with opened:
        if opened.identity != summary.rows_file:
            raise _not_the_run_s(
                out,
                f"it is not the file this run wrote (device {summary.rows_file[0]}, inode "
                f"{summary.rows_file[1]}; it is device {opened.identity[0]}, inode {opened.identity[1]}): "
                "another file was renamed over it since",
            )
        if summary.completed:
            unvouched = opened.incomplete(completion_key)
            if unvouched is not None:
                raise _not_the_run_s(out, unvouched.why)
            if completion_key is not None and opened.unsealed is not None:
                raise _not_the_run_s(out, f"{opened.unsealed}, and this run sealed the one it wrote")
            if opened.run_id != summary.run_id:
                raise _not_the_run_s(
                    out, f"its completion record names score run {opened.run_id!r}, not this run's"
                )
        try:
            rows = opened.read_all(partial(verdict_rows.read_verdicts, out))
        except RowsChanged as exc:
            raise _not_the_run_s(out, exc.why) from exc
        changed = opened.changed()
    if changed is not None:
        raise _not_the_run_s(out, changed)
    other = next((row for row in rows if row.run_id != summary.run_id), None)
    if other is not None:
        raise _not_the_run_s(
            out,
            f"the row of {other.path!r} names score run {other.run_id!r}, and this run "
            f"({summary.run_id!r}) wrote its id into every row",
        )
    return rows


def decide_output(
    out: Path,
    policy: Policy,
    *,
    audit_key: bytes,
    decisions: Path,
    audit_url: str | None,
    summary: ScoreSummary,
    seal_key: SealKey | None = None,
    near_copy_bits: int = 32,
    register: TraderRegister | None = None,
    on_decision: Callable[[ShipmentDecision], None] | None = None,
    on_staged: Callable[[os.stat_result], object] | None = None,
    row_key: bytes | None = None,
    completion_key: bytes | None = None,
) -> int:
    """Decide every shipment in the score output ``out`` and write ``decisions`` (JSONL).

    ``summary`` is the score run's that wrote ``out`` (:func:`~pipeline.score.runner.score_to_file`):
    only the rows of the file it wrote are decided, each naming its run, checked against the
    completion record it wrote (its seal with ``completion_key``), read from the one file checked
    (:func:`_rows_of_the_run`). Read by their name, an earlier run's genuine sealed rows (an older
    model's) renamed over ``out`` were decided as this run's: a RELEASE on scores this run never gave.

    The decisions file is written whole to a temporary name and renamed, so it is either the old
    one or complete; a ``decisions`` that is a link is written where it points. With ``audit_url``
    each shipment's pictures are looked up in the audit store (the same bytes, or a near-copy within
    ``near_copy_bits``, decided in another shipment) before it is decided, and the decision is
    recorded there, sealed with ``seal_key``. With ``register``, each trader's AEO tier is the
    registered one, not the manifest's. With ``row_key`` a row whose seal is missing or does not
    verify holds its shipment (:func:`pipeline.row_seal.untrusted`). ``on_staged`` is given the
    staged file's ``os.stat`` once it is written whole, before it is renamed into place (a rename
    keeps its device and inode): a caller records which file is its decisions before they exist
    under their name.

    Returns:
        The number of shipments decided. For a decision the audit store refused (one that would
        lower an unresolved hold), the file holds the decision the audit trail holds, marked
        ``refused``, or nothing where the trail holds none; it is counted in ``summary.unrecorded``
        and apart from the tiers, as ``clearsight decide`` does.

    Raises:
        InputError: rows that are not the ones the run wrote (:func:`_rows_of_the_run`), nothing
            decided; a row without a shipment id, a declaration that does not validate, or a
            ``decisions`` file that cannot be written.
        PolicyError, AuditError: from the decision layer and the audit store.
    """
    from pipeline.batch_decisions import decide_and_record
    from pipeline.decide import decide_rows

    # all of them checked before the decisions file is made or the store opened: nothing recorded
    scored = _rows_of_the_run(out, summary, completion_key)
    try:  # before the store is opened and anything recorded: the decisions must have their file
        # a link is written where it points: renamed onto the link, the file replaced it, and the
        # decisions never reached the file it named
        decisions = Path(os.path.realpath(decisions)) if decisions.is_symlink() else decisions
        decisions.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = temporary_beside(decisions)
    except OSError as exc:
        raise _cannot_write(decisions, exc) from exc
    fh = os.fdopen(fd, "wb")
    store = None
    count = 0
    try:
        with fh:
            store = _open_audit(audit_url, seal_key) if audit_url else None
            # this run sealed every row (a resume scored an unsealed one again): one that fails is
            # one changed since, and holds its shipment as decide holds it
            rows = untrusted(row_key, scored, repr(str(out)))
            if store is None:
                decided = (
                    (d, None) for d in decide_rows(policy, rows, audit_key=audit_key, register=register)
                )
            else:  # each shipment's pictures looked up in the store before it is decided and recorded
                decided = decide_and_record(
                    policy,
                    rows,
                    audit_key=audit_key,
                    store=store,
                    near_copy_bits=near_copy_bits,
                    register=register,
                )
            for decision, refused in decided:
                # the file says what the audit trail holds, never a decision it does not
                if decision.refused is None or decision.refused.standing_seq is not None:
                    fh.write(decision.model_dump_json().encode("utf-8") + b"\n")
                if refused is not None:
                    summary.unrecorded.append(refused)
                summary.add_decision(decision)
                if on_decision is not None:
                    on_decision(decision)
                count += 1
            try:
                keep_mode_and_owner(fh.fileno(), decisions)  # a file kept to its owner stays so
                fh.flush()
                os.fsync(fh.fileno())
                staged = os.fstat(fh.fileno())
            except OSError as exc:  # a full disk: said as such, not as an unexpected error
                raise _cannot_write(decisions, exc) from exc
            if on_staged is not None:
                on_staged(staged)
        try:
            os.replace(tmp, decisions)
        except OSError as exc:
            raise _cannot_write(decisions, exc) from exc
    finally:
        if store is not None:
            store.close()
        with contextlib.suppress(OSError):  # the error being reported matters more than this one
            tmp.unlink(missing_ok=True)
    return count
