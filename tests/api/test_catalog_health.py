"""Catalog, spec schema, health checks, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from core.catalog import catalog
from core.spec import spec_schema
from store.settings import Settings
from tests.api.conftest import FakeBroker, make_settings
from tests.api.support import assert_problem, spec, unique


def test_catalog_lists_every_kind(client: TestClient) -> None:
    body = client.get("/v1/catalog").json()
    kinds = {
        section: [e["kind"] for e in body[section]] for section in body if isinstance(body[section], list)
    }
    assert {"mnist1d", "digits", "synthetic", "cifar10", "imagefolder", "npz"} <= set(kinds["datasets"])
    assert {"mlp", "cnn1d", "cnn", "cifar_resnet", "wide_resnet", "torchvision"} | {
        "torchscript", "onnx", "pt2"
    } == set(kinds["models"])  # fmt: skip
    assert set(kinds["losses"]) == {
        "ce", "kd", "logit_mse", "hint", "attention", "dkd", "weight_l2", "source_consistency"
    }  # fmt: skip
    assert {"mixup", "mask", "replace", "shift"} <= set(kinds["augmentations"])
    assert set(kinds["optimizers"]) == {"sgd", "adam", "adamw"}
    assert set(kinds["schedules"]) == {"constant", "step", "cosine", "inverse_time"}
    assert set(kinds["compressions"]) == {"dynamic_int8", "prune", "teacher"}
    assert set(kinds["export_formats"]) == {"safetensors", "torchscript", "onnx", "pt2"}
    kd = next(e for e in body["losses"] if e["kind"] == "kd")
    assert kd["description"].startswith("Hinton")
    temperature = next(p for p in kd["parameters"] if p["name"] == "temperature")
    assert temperature == {
        "name": "temperature", "type": "float", "required": False, "description": None,
        "default": 2.0, "constraints": {"gt": 0.0},
    }  # fmt: skip
    models = {e["kind"]: e for e in body["models"]}
    assert models["torchscript"]["student"] is False and models["mlp"]["student"] is True
    assert models["onnx"]["student"] is False and models["pt2"]["student"] is False
    arch = next(p for p in models["torchvision"]["parameters"] if p["name"] == "arch")
    assert "resnet18" in arch["choices"]
    assert body == catalog()


def test_spec_schema(client: TestClient) -> None:
    assert client.get("/v1/spec/schema").json() == spec_schema()


def test_health_and_readiness(settings: Settings, broker: FakeBroker) -> None:
    def broker_down() -> None:
        raise ConnectionError("no broker")

    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=broker_down)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
        problem = assert_problem(client.get("/readyz"), 503)
        assert [e["field"] for e in problem["errors"]] == ["broker"]
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_without_a_database(tmp_path: Path, broker: FakeBroker) -> None:
    settings = make_settings(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200  # alive, though not ready
        problem = assert_problem(client.get("/readyz"), 503)
        assert [e["field"] for e in problem["errors"]] == ["database"]


def test_prometheus_metrics(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=spec(name=unique())).json()
    client.get(f"/v1/jobs/{job['id']}")
    client.get("/v1/jobs/nope")
    text = client.get("/metrics").text
    assert 'distillery_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1.0' in text
    assert 'distillery_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"} 1.0' in text
    assert 'distillery_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"} 1.0' in text
    assert "distillery_http_request_duration_seconds_bucket" in text
    queued = next(line for line in text.splitlines() if line.startswith('distillery_jobs{status="queued"}'))
    assert float(queued.split()[-1]) >= 1
    assert "distillery_jobs_awaiting_broker" in text


def test_openapi_documents_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/metrics", "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/artifacts", "/v1/artifacts/{artifact_id}",
        "/v1/models", "/v1/datasets", "/v1/catalog", "/v1/spec/schema",
        "/v1/spec/validate", "/v1/spec/examples", "/healthz", "/readyz", "/metrics",
        "/v1/pool", "/v1/teams", "/v1/users", "/v1/tokens", "/v1/tokens/{token_id}", "/v1/me", "/v1/audit",
    ):  # fmt: skip
        assert path in paths, path
    body = paths["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobSpec"}
    components = schema["components"]["schemas"]
    assert "JobSpec" in components and "KDLoss" in components and "JobOut" in components
    assert {t["name"] for t in schema["tags"]} == {
        "jobs", "sweeps", "artifacts", "uploads", "catalog", "pool", "access", "health"
    }  # fmt: skip
    assert client.get("/docs").status_code == 200
