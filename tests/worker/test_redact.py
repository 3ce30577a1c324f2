"""A failed job's error message names files relative to the data root or the job's directory."""

from __future__ import annotations

import site
from pathlib import Path

from store.settings import Settings
from tests.worker.support import TINY, Deployment, get_job, insert_job
from worker.redact import redact
from worker.tasks import Attempt


def test_a_missing_dataset_is_named_relative_to_the_data_root(deployment: Deployment) -> None:
    settings = deployment.settings
    spec = {**TINY, "data": {"kind": "npz", "path": "gone/missing.npz"}}
    job_id = insert_job(deployment.db_url, spec, placed_on="host", devices=[0])  # handed to "host"
    assert Attempt(settings, job_id, "host:1").run() == "failed"
    error = get_job(deployment.db_url, job_id).error
    assert error is not None and error["type"] == "data_missing", error
    assert "<data>/gone/missing.npz" in error["message"], error
    assert str(settings.data_path.resolve()) not in error["message"]
    assert str(settings.resolved_home()) not in error["message"]


def test_each_server_folder_becomes_its_placeholder(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", data_root=tmp_path / "data", work_dir=tmp_path / "work")
    job = tmp_path / "work" / "j1"
    packages = site.getsitepackages()[0]
    message = (
        f"{tmp_path}/data/x.npz; {job}/checkpoints/last.pt; {tmp_path}/work/j2; "
        f"{tmp_path}/home/artifacts/a.onnx; {packages}/torch/nn.py; {Path.home()}/notes; "
        f"{tmp_path}/database stays"
    )
    assert redact(message, settings, job) == (
        "<data>/x.npz; <job>/checkpoints/last.pt; <work>/j2; <artifacts>/a.onnx; "
        f"<site-packages>/torch/nn.py; ~/notes; {tmp_path}/database stays"
    )
