"""Specs as YAML, the dry-run validation, the examples, and the jobs list's ETag."""

from __future__ import annotations

from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from core.spec import load_spec
from tests.api.support import assert_problem, spec, unique

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
YAML = {"content-type": "application/yaml"}


def test_a_yaml_spec_is_submitted_like_its_json(client: TestClient) -> None:
    name = unique("yaml")
    text = yaml.safe_dump(spec(name=name))
    response = client.post("/v1/jobs", content=text, headers=YAML)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["name"] == name and job["spec"]["student"]["model"]["hidden"] == [16]
    # the same document as JSON, with the same key, is the same request
    key = {"Idempotency-Key": unique("key")}
    first = client.post("/v1/jobs", content=text, headers=YAML | key).json()
    again = client.post("/v1/jobs", json=spec(name=name), headers=key)
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == first["id"]


def test_bad_yaml_names_the_line_and_aliases_are_refused(client: TestClient) -> None:
    problem = assert_problem(client.post("/v1/jobs", content="name: [x\nseed: 1\n", headers=YAML), 422)
    assert problem["errors"][0]["field"] == "body" and "line" in problem["errors"][0]["message"]
    # a few aliases can stand for an enormous document, or a cyclic one
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcde", "bcdef", strict=True)]
    for bomb in ("\n".join(rows), "a: &a [*a]"):
        problem = assert_problem(client.post("/v1/jobs", content=bomb, headers=YAML), 422)
        assert "aliases" in problem["errors"][0]["message"]
    assert_problem(client.post("/v1/spec/validate", content=b"\xff\xfe", headers=YAML), 422)


def test_validate_returns_the_normalized_spec_and_stores_nothing(client: TestClient) -> None:
    name = unique("dry")
    response = client.post("/v1/spec/validate", content=yaml.safe_dump(spec(name=name)), headers=YAML)
    assert response.status_code == 200, response.text
    normalized = response.json()["spec"]
    assert normalized["name"] == name and normalized["distill"]["epochs"] == 3
    assert normalized["distill"]["batch_size"] > 0  # a default filled in
    assert client.get("/v1/jobs", params={"name": name}).json()["items"] == []
    assert client.post("/v1/spec/validate", json=spec(name=name)).json()["spec"] == normalized


def test_validate_names_each_bad_field_as_a_submission_would(client: TestClient) -> None:
    bad = spec(distill={"epochs": 0, "losses": [{"kind": "kd", "weight": 1.0, "temperature": -1}]})
    dry = assert_problem(client.post("/v1/spec/validate", json=bad), 422)
    fields = {e["field"] for e in dry["errors"]}
    assert {"distill.epochs", "distill.losses.0.temperature"} <= fields
    real = assert_problem(client.post("/v1/jobs", json=bad), 422)
    assert real["errors"] == dry["errors"]
    missing = spec(data={"kind": "npz", "path": "uploads/datasets/nothing.npz"})
    problem = assert_problem(client.post("/v1/spec/validate", json=missing), 422)
    assert problem["errors"][0]["field"] == "data.path"
    plain = {"content-type": "text/plain"}
    assert_problem(client.post("/v1/spec/validate", content=b"x", headers=plain), 415)


def test_the_examples_are_offered_as_templates_and_each_validates(client: TestClient) -> None:
    items = client.get("/v1/spec/examples").json()["items"]
    assert [i["filename"] for i in items] == sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    mnist = next(i for i in items if i["name"] == "mnist1d")
    assert mnist["text"] == (EXAMPLES / "mnist1d.yaml").read_text()
    assert mnist["description"].startswith("The default recipe: MNIST-1D")
    for item in items:
        response = client.post("/v1/spec/validate", content=item["text"], headers=YAML)
        assert response.status_code == 200, (item["name"], response.text)
        expected = load_spec(EXAMPLES / item["filename"]).model_dump(mode="json")
        assert response.json()["spec"] == expected


def test_the_jobs_list_answers_304_until_a_job_on_it_changes(client: TestClient) -> None:
    name = unique("etag")
    params = {"name": name}
    client.post("/v1/jobs", json=spec(name=name))
    first = client.get("/v1/jobs", params=params)
    tag = first.headers["ETag"]
    assert len(first.json()["items"]) == 1
    unchanged = client.get("/v1/jobs", params=params, headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == tag and not unchanged.content
    job_id = first.json()["items"][0]["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    changed = client.get("/v1/jobs", params=params, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert changed.json()["items"][0]["status"] == "cancelled"
    client.post("/v1/jobs", json=spec(name=name))  # a new job on the page changes it too
    newer = client.get("/v1/jobs", params=params, headers={"If-None-Match": changed.headers["ETag"]})
    assert newer.status_code == 200 and len(newer.json()["items"]) == 2
