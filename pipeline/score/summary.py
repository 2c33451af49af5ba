"""The end-of-run summary: counts by label, errors, shipments by tier, time and throughput.

Built from running counters (never from a list of rows), so it costs O(1) memory per run.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from rich.table import Table

from datasets.folder import extensions_text
from pipeline.resolution import SCALE_TOLERANCE, describe_scale, off_training_scale
from pipeline.verdicts import ImageVerdict, ShipmentDecision, Tier

__all__ = ["NOT_RECORDED", "ScoreSummary"]

NOT_RECORDED = "not recorded"
"""The shipments row of decisions the audit store refused, counted apart from the tiers."""


@dataclass
class ScoreSummary:
    """What one ``clearsight score`` run did.

    Attributes:
        scored: images given a score in this run.
        errors: images that became error rows in this run.
        skipped_done: images skipped because ``--resume`` found them in the output.
        taken_out: rows ``--resume`` took out of the output, their file changed since it was scored
            (or unreadable, or the row without a sha256): scored again where this run lists them
            (:mod:`pipeline.score.kept_content`); ``taken_out_unlisted`` of them it does not list.
        taken_out_example: the first, as (path, ``changed``/``unreadable``/``unhashed``/``unsealed``).
        taken_out_unsealed: of ``taken_out``, rows whose row seal is missing or does not verify
            (:mod:`pipeline.row_seal`): edited since they were scored, never sealed anew.
        taken_out_other_run: of ``taken_out``, rows of another run than the one the resume goes on
            with (:class:`~pipeline.score.kept_content.KeptContent`): an output is one run's.
        taken_out_absent: of ``taken_out``, scored rows whose file is not at their path now: their
            content cannot be compared, and the run's record would vouch for them unchecked.
        duplicates: inputs naming an image already seen in this run (scored once), a folder's
            path to a file it reached already by another name (a link) too.
        duplicate_example: the first of those left out for naming a file reached already, and the
            path scored for it (both absolute, their odd bytes as ``\\xNN``), set by
            ``clearsight score``.
        by_label: ``good``/``anomalous`` counts of this run's scored images.
        error_kinds: error rows by the exception name at the start of their message.
        off_scale: scored images whose scale is more than ``SCALE_TOLERANCE`` off their model's
            training images' (``pipeline.resolution.off_training_scale``).
        off_scale_example: the first of them, as (path, scale_vs_training).
        tiers: shipments per decision tier (with ``--policy``).
        reasons: how often each rule fired, per tier (with ``--policy``).
        left_out: files the folder and glob inputs left out for their extension (a ``.gif``, a
            ``.txt``; never hidden files), set by ``clearsight score``.
        left_out_example: the first of them (absolute, its odd bytes as ``\\xNN``).
        seconds: wall time of the scoring phase.
        peak_in_flight: most images held in memory at once by the local engine (0 for Ray).
        run_id: the run's id, which every row it wrote names (None: a resume of an output of a
            version before run ids, whose rows name none), set by ``score_to_file``.
        rows_file: the device and inode of the output file the run wrote, set by ``score_to_file``
            (None: a summary no run filled in); ``completed``: whether it wrote that file's
            completion record. ``decide_output`` decides the rows of that file alone.
    """

    scored: int = 0
    errors: int = 0
    skipped_done: int = 0
    kept_without_heatmap: int = 0
    kept_errors: int = 0
    kept_unlisted: int = 0  # rows a resume kept of pictures its inputs do not list: no completion record
    taken_out: int = 0  # rows a resume took out: their file changed, unreadable, or no sha256 to compare
    taken_out_example: tuple[str, str] | None = None  # the first (its path, how it stood)
    taken_out_unsealed: int = 0  # of taken_out: their row seal missing or not verifying (edited rows)
    taken_out_other_run: int = 0  # of taken_out: rows of another run than the one resumed
    taken_out_unlisted: int = 0  # of those, pictures this run does not list: not scored again
    taken_out_absent: int = 0  # of taken_out: scored rows whose file is not there now (never compared)
    rows_scored_in_output: int | None = None  # counted on a resume (None: not read)
    duplicates: int = 0
    duplicate_example: tuple[str, str] | None = None
    by_label: Counter[str] = field(default_factory=Counter)
    error_kinds: Counter[str] = field(default_factory=Counter)
    error_example: tuple[str, str] | None = None
    unrecorded: list[str] = field(default_factory=list)
    off_scale: int = 0
    off_scale_example: tuple[str, float] | None = None
    left_out: int = 0
    left_out_example: str | None = None
    tiers: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)
    seconds: float = 0.0
    peak_in_flight: int = 0
    run_id: str | None = None
    rows_file: tuple[int, int] | None = None
    completed: bool = False

    @property
    def images(self) -> int:
        """Rows written in this run (scored plus errors)."""
        return self.scored + self.errors

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def add_row(self, verdict: ImageVerdict) -> None:
        """Count one row written in this run."""
        if verdict.error is not None:
            self.errors += 1
            # the message up to its first ':' or ';' names the kind ("no model for cargo type 'x'")
            self.error_kinds[re.split(r"[:;]", verdict.error, maxsplit=1)[0]] += 1
            if self.error_example is None:
                self.error_example = (verdict.path, verdict.error)
        else:
            self.scored += 1
            self.by_label[verdict.label or "?"] += 1
            scale = verdict.scale_vs_training
            if off_training_scale(scale):
                self.off_scale += 1
                if self.off_scale_example is None:
                    self.off_scale_example = (verdict.path, scale)

    def add_decision(self, decision: ShipmentDecision) -> None:
        """Count one shipment decision and the rules behind it; one the audit store refused counts
        as :data:`NOT_RECORDED`, in no tier (what stands is not what this run decided)."""
        tier = NOT_RECORDED if decision.refused is not None else decision.tier.value
        self.tiers[tier] += 1
        per_tier = self.reasons.setdefault(tier, Counter())
        for reason in decision.reasons:
            per_tier[reason.rule] += 1

    def warnings(self) -> list[str]:
        """What the user must know about this run's scores, one sentence each (empty when nothing)."""
        out = []
        if self.error_example is not None:
            path, error = self.error_example
            out.append(
                f"{self.errors} of {self.images} images could not be scored: {path}, for one: {error}. "
                "Their rows carry the error, and a decision policy does not release their shipments."
            )
        if self.kept_errors:
            out.append(
                f"{self.kept_errors} rows kept from the earlier run hold an error (their images were not "
                "scored); --retry-errors scores them again."
            )
        if self.kept_unlisted:
            out.append(
                f"{self.kept_unlisted} rows kept from the earlier run are of pictures this run's inputs do "
                "not list under their shipment (that run's other inputs, or a manifest corrected since), so "
                "no completion record was written: `clearsight decide` refuses the rows, as pictures of "
                "their shipments may never have been scored; resume with the inputs the earlier run was "
                "given, or score into a new --out"
            )
        if self.taken_out_example is not None:
            path, how = self.taken_out_example
            why = {
                "changed": "its file holds other bytes than the row's sha256 (a new scan written over "
                "the name)",
                "unreadable": "its file is there but cannot be read, so whether it is the picture scored "
                "cannot be told",
                "unhashed": "the row has no sha256 to compare its file with",
                "unsealed": "its row seal is missing or does not verify (the row was changed after it was "
                "scored, or written without this CLEARSIGHT_AUDIT_SECRET)",
                "other run": "it is of another score run than the output's other rows (an earlier run's "
                "rows put among them?), and an output holds one run's rows",
                "absent": "no file is at its path now (archived or moved away since it was scored?), so "
                "whether the row is of the picture scored there cannot be told, and a resume vouches "
                "only for rows it checked; a listed picture is scored again, an error row while its "
                "file is not there, which holds its shipment: score it from where it lies now",
            }[how]
            again = (
                f"; {self.taken_out_unlisted} of them are of pictures this run's inputs do not list, not "
                "scored again, so no completion record was written: resume with the inputs the earlier "
                "run was given"
                if self.taken_out_unlisted
                else ""
            )
            unsealed = (
                f" ({self.taken_out_unsealed} of them for a row seal missing or not verifying: "
                "the row changed since it was scored)"
                if self.taken_out_unsealed
                else ""
            )
            if self.taken_out_absent:
                unsealed += (
                    f" ({self.taken_out_absent} of them for their picture no longer at its path: not "
                    "compared)"
                )
            if self.taken_out_other_run:
                unsealed += (
                    f" ({self.taken_out_other_run} of them for being of another score run than the rows "
                    "kept: an output holds one run's rows)"
                )
            # "changed" alone says the file is another picture; unreadable and unhashed say it may be
            out.append(
                f"{self.taken_out} row(s) of the earlier run were taken out of the output, their file "
                "changed since it was scored, unreadable, no longer there, or without a sha256 in the row "
                f"to compare it with{unsealed}, and their pictures scored again where this run lists them: "
                f"{path}, for one: {why}{again}"
            )
        if self.kept_without_heatmap:
            out.append(
                f"{self.kept_without_heatmap} scored rows kept from the earlier run have no heatmap (it ran "
                "without --heatmaps); score into a new --out to draw heatmaps for every image."
            )
        if self.duplicate_example is not None:
            dropped, kept = self.duplicate_example
            out.append(
                f"{self.duplicates} input(s) named an image given already, scored once: {dropped}, for one, "
                f"is the file {kept} is (a link to it, or another spelling of its path), and has no row "
                "of its own"
            )
        if self.left_out_example is not None:
            files = "1 file" if self.left_out == 1 else f"{self.left_out} files"
            out.append(
                f"{files} left out (not an image extension), e.g. {self.left_out_example}: a folder or "
                f"glob takes only files named {extensions_text()}; a picture in one of those formats "
                "under another name is scored once renamed"
            )
        if self.off_scale_example is None:
            return out
        path, scale = self.off_scale_example
        return out + [
            f"{self.off_scale} of {self.scored} scored images are more than {SCALE_TOLERANCE:g}x off the "
            f"scale of their model's training images: {path}, for one, was {describe_scale(scale)}. Their "
            "scores were never validated at that scale, and a decision policy does not release on "
            "them. Images of the training images' view at another resolution: resize them to the "
            "training images' size (the model card's preprocessing.source_resolution); another "
            "view: train on images like them."
        ]

    def tables(self) -> list[Table]:
        """Rich tables for the terminal: images, then shipments (when decided)."""
        images = Table(title="Images", show_header=True)
        images.add_column("what")
        images.add_column("count", justify="right")
        for label, count in sorted(self.by_label.items()):
            images.add_row(f"scored: {label}", str(count))
        for kind, count in sorted(self.error_kinds.items()):
            images.add_row(f"error: {kind}", str(count))
        images.add_row("errors (total)", str(self.errors))
        if self.off_scale:
            images.add_row(f"scored off the training scale (> {SCALE_TOLERANCE:g}x)", str(self.off_scale))
        if self.skipped_done:
            images.add_row("already in output (resumed)", str(self.skipped_done))
        content = self.taken_out - self.taken_out_unsealed - self.taken_out_other_run - self.taken_out_absent
        if content:
            images.add_row("rows taken out on resume (file changed, unreadable, or no sha256)", str(content))
        if self.taken_out_absent:
            images.add_row(
                "rows taken out on resume (picture no longer at its path)", str(self.taken_out_absent)
            )
        if self.taken_out_other_run:
            images.add_row("rows taken out on resume (of another score run)", str(self.taken_out_other_run))
        if self.taken_out_unsealed:
            images.add_row(
                "rows taken out on resume (row seal missing or not verifying)", str(self.taken_out_unsealed)
            )
        if self.duplicates:
            images.add_row("duplicate inputs (scored once)", str(self.duplicates))
        if self.left_out:
            images.add_row("files left out (not an image extension)", str(self.left_out))
        images.add_row("time", f"{self.seconds:.1f} s")
        images.add_row("throughput", f"{self.images_per_second:.1f} images/s")
        out = [images]
        if self.tiers:
            shipments = Table(title="Shipments", show_header=True)
            shipments.add_column("tier")
            shipments.add_column("count", justify="right")
            shipments.add_column("top reasons")
            for tier in [t.value for t in Tier] + ([NOT_RECORDED] if self.tiers.get(NOT_RECORDED) else []):
                count = self.tiers.get(tier, 0)
                common = self.reasons.get(tier, Counter()).most_common(3)
                top = ", ".join(f"{rule} ({n})" for rule, n in common)
                shipments.add_row(tier, str(count), top)
            out.append(shipments)
        return out
