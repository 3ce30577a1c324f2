"""Resource limits: a spec whose estimated cost is over the service's limits is a 422, never stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from store.settings import Settings
from tests.api.conftest import FakeBroker, make_settings
from tests.api.npz_cases import npz_bytes
from tests.api.support import Member, assert_problem, spec, unique

OVERSIZED: dict[str, tuple[dict[str, Any], str, str]] = {
    "mlp": (
        {"student": {"model": {"kind": "mlp", "hidden": [100000, 100000]}}},
        "student.model.hidden",
        "about 1e10 parameters, over this service's limit of 1e9 (DISTILLERY_MAX_PARAMS)",
    ),
    "cnn": (
        {
            "data": {"kind": "cifar10"},
            "teacher": {"model": {"kind": "cnn", "channels": [100000, 100000]}},
            "student": {"model": {"kind": "cnn"}},
        },
        "teacher.model.channels",
        "(DISTILLERY_MAX_PARAMS)",
    ),
    "dataset": (
        {"data": {"kind": "synthetic", "size": 512, "train_size": 5_000_000}},
        "data.train_size",
        "(DISTILLERY_MAX_DATASET_BYTES)",
    ),
    "losses": ({"distill": {"losses": [{"kind": "ce"}] * 100}}, "distill.losses", "at most 16 items"),
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/spec/validate"])
def test_an_oversized_spec_is_refused_naming_its_field(client: TestClient, path: str, case: str) -> None:
    changes, field, message = OVERSIZED[case]
    name = unique("big")
    problem = assert_problem(client.post(path, json=spec(name=name, **changes)), 422)
    errors = {e["field"]: e["message"] for e in problem["errors"]}
    assert field in errors and message in errors[field], errors
    assert field in problem["detail"]
    assert client.get("/v1/jobs", params={"name": name}).json()["items"] == []  # nothing stored


@pytest.fixture
def strict_client(db_url: str, tmp_path: Path, broker: FakeBroker, member: Member) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, db_url, max_params=500, max_dataset_bytes=1000)
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app, headers=member.headers) as client:
        yield client


def test_a_lowered_limit_refuses_a_normal_spec_with_the_settings_name(strict_client: TestClient) -> None:
    for path in ("/v1/jobs", "/v1/spec/validate"):
        problem = assert_problem(strict_client.post(path, json=spec(name=unique())), 422)
        errors = {e["field"]: e["message"] for e in problem["errors"]}
        assert "limit of 500 (DISTILLERY_MAX_PARAMS)" in errors["student.model.hidden"]
        assert "(DISTILLERY_MAX_PARAMS)" in errors["teacher.model.channels"]
        assert "DISTILLERY_MAX_DATASET_BYTES" in errors["data"]


def test_an_uploaded_archive_lends_the_estimate_its_size(strict_client: TestClient) -> None:
    upload = strict_client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes())})
    assert upload.status_code == 201, upload.text
    tiny = {"model": {"kind": "mlp", "hidden": [2]}}
    body = spec(name=unique(), data={"kind": "npz", "path": upload.json()["path"]}, student=tiny)
    body["teacher"] = {**body["teacher"], **tiny}
    problem = assert_problem(strict_client.post("/v1/spec/validate", json=body), 422)
    # 39 rows of 36 bytes (and their labels): only the upload's summary tells the estimate that
    assert [e["field"] for e in problem["errors"]] == ["data"]
    assert "about 1716 bytes of data" in problem["errors"][0]["message"]


def test_limits_read_from_the_environment_accept_scientific_notation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLERY_MAX_PARAMS", "2e9")
    monkeypatch.setenv("DISTILLERY_MAX_EPOCH_WORK", "1000")
    settings = Settings()
    assert settings.max_params == 2_000_000_000 and settings.max_epoch_work == 1000
    monkeypatch.setenv("DISTILLERY_MAX_PARAMS", "1.5")
    with pytest.raises(ValueError, match="max_params"):
        Settings()
