"""What determines a stage's result, as a key: stages with the same key train the same weights.

A host that keeps finished stages (the service keeps each team's teachers and labels-only
baselines) looks them up by this key and puts the stored weights where the run looks for them
(``stages/<stage>/``), so the run skips the stage. The key is a hash of everything the stage's
training reads: its model and training spec, its data spec, the job's seed (which seeds
initialization, batches and augmentation), the numerics (precision, compilation, data-parallel
world size), the stage's name (it enters the derived seeds) and the engine's version. It is
computed from the spec alone, without torch.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core import __version__
from core.spec import JobSpec, TeacherSpec

# Bump when training changes in a way that changes a stage's weights for the same spec, so that
# stages trained before are no longer taken for the new ones.
ENGINE_VERSION = f"{__version__}+stages.1"


def teacher_stage(index: int) -> str:
    """The stage that trains teacher ``index`` (its results and timing are keyed by this name)."""
    return "teacher" if index == 0 else f"teacher{index}"


def _digest(stage: str, spec: JobSpec, determinants: dict[str, Any]) -> str:
    payload = {
        "stage": stage,
        "engine": ENGINE_VERSION,
        "seed": spec.seed,
        "precision": spec.runtime.precision,
        "compile": spec.runtime.compile,
        "world": spec.resources.gpus,
        **determinants,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def teacher_key(spec: JobSpec, index: int) -> str | None:
    """The key of teacher ``index``'s training stage; None if the teacher is given (not trained)."""
    tspec: TeacherSpec = spec.all_teachers[index]
    if not tspec.needs_training:
        return None
    teacher = tspec.model_dump(mode="json", exclude={"from_job", "data"})
    data = (tspec.data or spec.data).model_dump(mode="json")
    return _digest(teacher_stage(index), spec, {"teacher": teacher, "data": data})


def baseline_key(spec: JobSpec) -> str | None:
    """The key of the labels-only baseline (the student's model and budget); None when disabled."""
    if not spec.baseline.enabled:
        return None
    d = spec.distill
    budget = d.model_dump(
        mode="json", include={"epochs", "batch_size", "optimizer", "schedule", "grad_clip_norm", "select"}
    )
    augment = [a.model_dump(mode="json") for a in d.transfer.augment] if spec.baseline.augment else []
    return _digest(
        "baseline",
        spec,
        {
            "student": spec.student.model.model_dump(mode="json"),
            "budget": budget,
            "augment": augment,
            "data": spec.data.model_dump(mode="json"),
        },
    )


def shared_stages(spec: JobSpec) -> dict[str, str]:
    """``{stage: key}`` for every stage of ``spec`` that another job could have trained."""
    keys = {teacher_stage(i): teacher_key(spec, i) for i in range(len(spec.all_teachers))}
    keys["baseline"] = baseline_key(spec)
    return {stage: key for stage, key in keys.items() if key is not None}
