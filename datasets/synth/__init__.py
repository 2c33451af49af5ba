"""Synthetic inspection data: bulk ore and vacuum-packed cargo, normal and anomalous, with masks.

No real labelled anomaly data can be downloaded where Clearsight runs, so this generator is the
project's embedded default data. Scenes are rendered procedurally (NumPy/OpenCV), anomalies are
drawn into the scene before lighting, and the same nuisance (pose, light, white balance, blur, noise,
JPEG) is applied after, so that an anomalous image differs from a normal one only in the anomaly.
"""

from __future__ import annotations

from datasets.synth.generate import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    SynthConfig,
    SynthSummary,
    changed_files,
    generate_dataset,
    journaled_files,
    listed_files,
    not_generated,
    written_by_generator,
)
from datasets.synth.preview import contact_sheet
from datasets.synth.sample import ANOMALY_TYPES, CARGO_TYPES, GOOD, MASK_THRESHOLD, Sample, render_sample

__all__ = [
    "ANOMALY_TYPES",
    "CARGO_TYPES",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "GOOD",
    "MASK_THRESHOLD",
    "Sample",
    "SynthConfig",
    "SynthSummary",
    "changed_files",
    "contact_sheet",
    "generate_dataset",
    "journaled_files",
    "listed_files",
    "not_generated",
    "render_sample",
    "written_by_generator",
]
