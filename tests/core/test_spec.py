"""The job spec: defaults, examples, errors that name the field, schema and reference docs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import SpecError
from core.spec import JobSpec, load_spec, load_spec_text, parse_spec, spec_schema
from core.specdoc import render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def error_of(data: object) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data)  # type: ignore[arg-type]
    return str(info.value)


def test_empty_spec_is_the_mnist1d_example() -> None:
    example = load_spec(ROOT / "examples" / "mnist1d.yaml").model_dump()
    default = JobSpec().model_dump()
    for key in ("name", "compress"):  # the example names itself and asks for compression
        example.pop(key)
        default.pop(key)
    assert example == default


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    assert load_spec(path).spec_version == 1


def test_at_least_the_promised_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"mnist1d", "digits", "cifar10", "multi_teacher", "transfer_learning"} <= names


def test_unknown_kind_lists_the_known_ones() -> None:
    msg = error_of({"data": {"kind": "imagenet"}})
    assert "data:" in msg and "'imagenet'" in msg
    for kind in ("mnist1d", "digits", "synthetic", "cifar10", "imagefolder", "npz"):
        assert f"'{kind}'" in msg


def test_unknown_loss_names_its_position() -> None:
    msg = error_of({"distill": {"losses": [{"kind": "kd"}, {"kind": "fitnet"}]}})
    assert "distill.losses.1:" in msg and "'hint'" in msg and "'dkd'" in msg


def test_wrong_type_names_the_field() -> None:
    msg = error_of({"distill": {"epochs": "many"}})
    assert "distill.epochs:" in msg and "integer" in msg


def test_unknown_field_is_refused() -> None:
    assert "teacher.temperature: Extra inputs are not permitted" in error_of({"teacher": {"temperature": 4}})


def test_all_problems_are_reported_at_once() -> None:
    msg = error_of({"seed": -1, "student": {"model": {"kind": "mlp", "hidden": [0]}}})
    assert "seed:" in msg and "student.model.mlp.hidden.0:" in msg


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret.npz", "a/../../b.npz", ""])
def test_paths_cannot_leave_the_data_root(path: str) -> None:
    assert "data.npz.path" in error_of({"data": {"kind": "npz", "path": path}})


def test_teacher_index_must_exist() -> None:
    assert "teacher 2 does not exist" in error_of({"distill": {"losses": [{"kind": "kd", "teacher": 2}]}})


def test_feature_losses_refuse_a_torchscript_teacher() -> None:
    spec = {
        "teacher": {"model": {"kind": "torchscript", "path": "t.pt"}},
        "distill": {"losses": [{"kind": "hint", "student_layer": "a", "teacher_layer": "b"}]},
    }
    assert "torchscript teacher does not expose" in error_of(spec)


def test_all_zero_weights_are_refused() -> None:
    assert "every loss term has weight 0" in error_of({"distill": {"losses": [{"kind": "kd", "weight": 0}]}})


def test_attention_layers_pair_up() -> None:
    spec = {
        "distill": {"losses": [{"kind": "attention", "student_layers": ["a"], "teacher_layers": ["b", "c"]}]}
    }
    assert "must pair up" in error_of(spec)


def test_baseline_accepts_a_bool() -> None:
    assert parse_spec({"baseline": False}).baseline.enabled is False
    assert parse_spec({"baseline": {"augment": True}}).baseline.augment is True


def test_json_and_yaml_give_the_same_spec() -> None:
    data = {"name": "x", "distill": {"epochs": 3}}
    assert load_spec_text(json.dumps(data), fmt="json") == load_spec_text("name: x\ndistill: {epochs: 3}\n")


def test_unparseable_text() -> None:
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec_text("data: {kind: [")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec_text("- 1\n- 2\n")


def test_spec_is_frozen() -> None:
    spec = JobSpec()
    with pytest.raises(Exception, match="frozen"):
        spec.seed = 3  # type: ignore[misc]


def test_schema_round_trip_and_kinds() -> None:
    schema = spec_schema()
    assert schema["title"] == "JobSpec" and "$defs" in schema
    assert json.loads(json.dumps(schema)) == schema
    text = json.dumps(schema)
    for kind in ("mnist1d", "kd", "dkd", "source_consistency", "inverse_time", "cutmix"):
        assert f'"{kind}"' in text


def test_spec_imports_without_torch() -> None:
    code = "import sys, core.spec; assert 'torch' not in sys.modules, 'core.spec pulled in torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_reference_docs_are_in_step_with_the_code() -> None:
    assert (ROOT / "docs" / "spec.md").read_text() == render(), (
        "regenerate: python -m core.specdoc > docs/spec.md"
    )
