"""Batch scoring: stream images from folders, globs and manifests through a model, crash-safely.

The pieces, in the order a run uses them: :func:`iter_tasks` (what to score), :class:`ModelRouter`
(which model scores it), an engine (:class:`LocalEngine`, or :class:`RayEngine` with the optional
Ray extra), and :func:`score_to_file` (resume, rows, heatmaps, summary). After scoring,
:func:`decide_output` turns the rows into shipment decisions under a policy.
"""

from __future__ import annotations

from pipeline.score.batch import ScoredRow
from pipeline.score.decisions import decide_output, decisions_path
from pipeline.score.local_engine import LocalEngine
from pipeline.score.ray_engine import ModelDirs, RayEngine
from pipeline.score.routing import ModelRouter
from pipeline.score.runner import Engine, heatmap_name, score_to_file
from pipeline.score.sources import ImageTask, count_tasks, is_manifest, iter_tasks
from pipeline.score.summary import ScoreSummary
from pipeline.score.writer import iter_rows, output_format

__all__ = [
    "Engine",
    "ImageTask",
    "LocalEngine",
    "ModelDirs",
    "ModelRouter",
    "RayEngine",
    "ScoreSummary",
    "ScoredRow",
    "count_tasks",
    "decide_output",
    "decisions_path",
    "heatmap_name",
    "is_manifest",
    "iter_rows",
    "iter_tasks",
    "output_format",
    "score_to_file",
]
