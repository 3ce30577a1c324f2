"""Stage keys: the same teacher or baseline gets the same key, anything its training reads changes it."""

from __future__ import annotations

from typing import Any

import pytest

from core.spec import parse_spec
from core.stagekeys import baseline_key, shared_stages, teacher_key

BASE: dict[str, Any] = {"data": {"kind": "mnist1d", "train_limit": 400}}


def keys(**changes: Any) -> dict[str, str]:
    return shared_stages(parse_spec({**BASE, **changes}))


def test_the_distillation_recipe_leaves_teacher_and_baseline_keys_alone() -> None:
    assert keys(distill={"losses": [{"kind": "kd", "temperature": 2.0, "weight": 0.5}]}) == keys()
    assert keys(export=["onnx"], name="other", compress=[]) == keys()
    assert keys(teacher={"from_job": "abc123"}) == keys()  # from_job names where, not what


@pytest.mark.parametrize(
    ("change", "teacher_changes", "baseline_changes"),
    [
        ({"seed": 1}, True, True),
        ({"data": {"kind": "mnist1d", "train_limit": 500}}, True, True),
        ({"teacher": {"train": {"epochs": 3}}}, True, False),
        ({"teacher": {"model": {"kind": "cnn1d", "channels": 8}}}, True, False),
        ({"student": {"model": {"kind": "mlp", "hidden": [10]}}}, False, True),
        ({"distill": {"epochs": 7}}, False, True),
        ({"distill": {"transfer": {"augment": []}}}, False, False),  # the baseline trains without it
        ({"baseline": {"augment": True}}, False, True),
        ({"runtime": {"precision": "fp32"}}, True, True),
        ({"resources": {"gpus": 2}}, True, True),
    ],
)
def test_what_a_stage_reads_changes_its_key(
    change: dict[str, Any], teacher_changes: bool, baseline_changes: bool
) -> None:
    before, after = keys(), keys(**change)
    assert (after["teacher"] != before["teacher"]) is teacher_changes
    assert (after["baseline"] != before["baseline"]) is baseline_changes


def test_given_teachers_and_disabled_baselines_have_no_key() -> None:
    spec = parse_spec({**BASE, "teacher": {"checkpoint": "t.safetensors"}, "baseline": {"enabled": False}})
    assert teacher_key(spec, 0) is None and baseline_key(spec) is None and shared_stages(spec) == {}


def test_each_teacher_of_an_ensemble_has_its_own_key() -> None:
    spec = parse_spec({**BASE, "teachers": [{}]})  # two identical teacher specs, two stages
    stages = shared_stages(spec)
    assert set(stages) == {"teacher", "teacher1", "baseline"} and stages["teacher"] != stages["teacher1"]
