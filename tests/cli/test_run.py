"""``distill run | validate | schema``: exit codes, messages, and a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.run import app
from tests.core.test_runner import TINY

runner = CliRunner()


def write(tmp_path: Path, data: object, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_prints_the_table_and_writes_the_report(tmp_path: Path) -> None:
    spec = write(tmp_path, {**TINY, "compress": [], "export": ["torchscript"]})
    result = runner.invoke(app, ["run", str(spec), "--out", str(tmp_path / "out"), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["teacher", "baseline", "student"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verdict"] in " ".join(result.stdout.split())
    assert f"{report['student']['test_top1']:.4f}" in result.stdout
    assert f"KD gain (student − baseline, test top-1): {report['kd_gain']:+.4f}" in result.stdout
    assert "report.json" in result.stderr


def test_bad_spec_exits_2_naming_the_field(tmp_path: Path) -> None:
    spec = write(tmp_path, {"student": {"model": {"kind": "transformer"}}})
    result = runner.invoke(app, ["run", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "student.model" in result.stderr and "'mlp'" in result.stderr


def test_missing_spec_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "cannot read spec file" in result.stderr


def test_missing_data_exits_3_naming_the_files(tmp_path: Path) -> None:
    spec = write(tmp_path, {"data": {"kind": "cifar10"}, "teacher": {"model": {"kind": "cnn"}}})
    args = ["run", str(spec), "--out", str(tmp_path / "out"), "--data-root", str(tmp_path / "root"), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 3
    assert "data_batch_1" in result.stderr and "download: true" in result.stderr


def test_the_data_root_comes_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_DATA_ROOT", str(tmp_path / "elsewhere"))
    spec = write(tmp_path, {"data": {"kind": "cifar10"}, "teacher": {"model": {"kind": "cnn"}}})
    result = runner.invoke(app, ["run", str(spec), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 3 and "elsewhere" in result.stderr


def test_unavailable_device_is_a_spec_error(tmp_path: Path) -> None:
    spec = write(tmp_path, TINY)
    result = runner.invoke(app, ["run", str(spec), "--out", str(tmp_path / "o"), "--device", "cuda:3", "-q"])
    assert result.exit_code == 2 and "CUDA is not available" in result.stderr


def test_validate_fills_defaults_and_schema_is_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(write(tmp_path, {"name": "x"}))])
    assert result.exit_code == 0 and json.loads(result.stdout)["distill"]["epochs"] == 1000
    schema = runner.invoke(app, ["schema"])
    assert schema.exit_code == 0 and json.loads(schema.stdout)["title"] == "JobSpec"


def test_validate_prints_the_estimate_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('{"student": {"model": {"kind": "mlp", "hidden": [100000, 100000]}}}')
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["student"]["model"]["hidden"] == [100000, 100000]  # stdout: the spec
    stderr = " ".join(result.stderr.split())
    assert "student.model (mlp): 1e10 parameters" in stderr and "stage student: about" in stderr
    assert "student.model.hidden: about 1e10 parameters" in stderr and "DISTILLERY_MAX_PARAMS" in stderr
