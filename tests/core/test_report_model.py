"""The typed report: stored reports keep their shape, old ones still read, no torch needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.report_model import Report
from tests.reports import REPORT, report

ROOT = Path(__file__).resolve().parents[2]


def test_a_report_reads_typed_and_dumps_exactly_as_given() -> None:
    typed = Report.model_validate(REPORT)
    assert typed.model_dump(mode="json") == REPORT
    assert typed.student.best_epoch == 41 and typed.teacher.source == "trained"
    assert typed.baseline is not None and typed.baseline.agreement == 0.64
    assert typed.timing.total_s == 43.2 and typed.timing.stages == {
        "teacher_s": 3.5,
        "baseline_s": 2.0,
        "distill_s": 4.0,
    }
    assert [name for name, _ in typed.models()] == ["teacher", "baseline", "student"]


def test_an_older_report_without_the_optional_parts_still_reads_and_gains_no_keys() -> None:
    old = report()
    for key in ("report_version", "teachers", "compressed", "source_tasks", "compression", "artifacts"):
        del old[key]
    del old["student"]["exported_torchscript_test_top1"], old["teacher"]["flops"]
    typed = Report.model_validate(old)
    assert typed.report_version == 1 and typed.teachers == [] and typed.source_tasks == []
    assert typed.compression.params_ratio is None and typed.artifacts == {}
    assert typed.student.exported_torchscript_test_top1 is None and typed.teacher.flops is None
    assert typed.model_dump(mode="json") == old  # what the API answered for it before


def test_a_null_kept_where_the_engine_wrote_one() -> None:
    # a TorchScript teacher's MACs cannot be counted: null, not absent
    stored = report(teacher={**REPORT["teacher"], "macs": None, "flops": None}, baseline=None, kd_gain=None)
    dumped = Report.model_validate(stored).model_dump(mode="json")
    assert dumped["teacher"]["macs"] is None and "macs" in dumped["teacher"]
    assert dumped["baseline"] is None and dumped == stored


def test_keys_of_a_newer_engine_pass_through() -> None:
    newer = report(calibration={"bins": 15}, student={**REPORT["student"], "test_top10": 1.0})
    assert Report.model_validate(newer).model_dump(mode="json") == newer


def test_a_report_without_its_student_is_refused() -> None:
    with pytest.raises(ValidationError, match="student"):
        Report.model_validate(report(student=None))


def test_the_output_schema_describes_the_fields() -> None:
    schema = Report.model_json_schema(mode="serialization")
    assert {"name", "teacher", "student", "verdict", "timing"} <= set(schema["required"])
    metrics = schema["$defs"]["ModelMetrics"]
    assert "agreement" in metrics["properties"] and "agreement" not in metrics["required"]
    assert schema["$defs"]["Timing"]["additionalProperties"] == {"type": "number"}


def test_the_model_needs_no_torch() -> None:
    script = "import sys, core.report_model; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
