"""Uploads: TorchScript, ONNX, torch.export and safetensors teachers, npz datasets; pickles, unsafe
operators and oversized files refused."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file

from api.app import create_app
from store.settings import Settings
from tests.api.conftest import FakeBroker, make_settings
from tests.api.npz_cases import BAD_NPZ, npz_bytes
from tests.api.support import Member, assert_problem


@pytest.fixture(scope="module")
def torchscript_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch = pytest.importorskip("torch")  # the tests make the file; the API never imports torch
    model = torch.jit.trace(torch.nn.Linear(4, 3).eval(), torch.zeros(1, 4))
    path = tmp_path_factory.mktemp("ts") / "teacher.pt"
    torch.jit.save(model, str(path))
    return path.read_bytes()


@pytest.fixture(scope="module")
def state_dict_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("sd") / "weights.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), str(path))
    return path.read_bytes()


def safetensors_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "w.safetensors"
    save_file({"fc.weight": np.zeros((3, 4), np.float32), "fc.bias": np.ones(3, np.float32)}, str(path))
    return path.read_bytes()


def post_model(client: TestClient, data: bytes, name: str = "teacher.pt", **form: str) -> Any:
    return client.post("/v1/models", files={"file": (name, data, "application/octet-stream")}, data=form)


def test_torchscript_upload(client: TestClient, settings: Settings, torchscript_bytes: bytes) -> None:
    response = post_model(client, torchscript_bytes)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (
        body["kind"] == "model" and body["format"] == "torchscript" and body["size"] == len(torchscript_bytes)
    )
    assert body["path"] == f"uploads/models/{body['id']}.pt"
    assert body["spec_fragment"] == {"teacher": {"model": {"kind": "torchscript", "path": body["path"]}}}
    assert (settings.data_path / body["path"]).read_bytes() == torchscript_bytes
    assert response.headers["location"] == f"/v1/models/{body['id']}"
    assert client.get(f"/v1/models/{body['id']}").json()["sha256"] == body["sha256"]
    assert body["id"] in [m["id"] for m in client.get("/v1/models").json()["items"]]
    # the path it gives is one a spec accepts
    job = client.post("/v1/jobs", json={"teacher": body["spec_fragment"]["teacher"]})
    assert job.status_code == 202, job.text


@pytest.mark.parametrize("kind", ["pickle", "state_dict", "text"])
def test_pickles_posing_as_models_are_refused(
    client: TestClient, settings: Settings, state_dict_bytes: bytes, kind: str
) -> None:
    data = {
        "pickle": pickle.dumps({"weight": [1.0, 2.0]}),
        "state_dict": state_dict_bytes,
        "text": b"not a model",
    }[kind]
    body = assert_problem(post_model(client, data, format="torchscript"), 422)
    assert "not a TorchScript archive; pickled models are never loaded" in body["detail"]
    assert body["errors"][0]["field"] == "file"
    leftovers = list((settings.data_path / "uploads/models").glob("*"))
    assert all(p.suffix != ".pt" or p.stat().st_size != len(data) for p in leftovers)


@pytest.mark.parametrize("case", ["reader", "writer", "on_load", "custom"])
def test_torchscript_calling_unsafe_operators_is_refused(
    client: TestClient, settings: Settings, tmp_path: Path, case: str
) -> None:
    pytest.importorskip("torch")
    from tests.core.test_opcheck import SECRET, _hostile, _save_script

    module, target = _hostile(tmp_path)[case]
    data = _save_script(module, tmp_path / "teacher.pt").read_bytes()
    body = assert_problem(post_model(client, data), 422)
    assert ("distillery_test::leak" if case == "custom" else "aten::from_file") in body["detail"]
    assert "code/__torch__" in body["detail"]  # where it was found
    assert body["errors"][0]["field"] == "file" and SECRET not in json.dumps(body)
    assert not list((settings.data_path / "uploads/models").glob("*.pt"))
    assert case == "reader" or not target.exists()


def _onnx_bytes(domain: str = "", external: bool = False) -> bytes:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weights = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    if external:
        weights.data_location = TensorProto.EXTERNAL
        weights.external_data.add(key="location", value="../../etc/passwd")
    node = helper.make_node("Leak" if domain else "Add", ["x", "w"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[weights],
    )
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())


def _pt2_bytes(tmp_path: Path, pickled_weight: bool = False) -> bytes:
    torch = pytest.importorskip("torch")
    from tests.core.test_opcheck import _pt2, _rewrite

    path = _pt2(torch.nn.Sequential(torch.nn.Linear(5, 3)), tmp_path / "t.pt2")
    if pickled_weight:
        config = {"config": {"0.weight": {"path_name": "weight_0", "use_pickle": True, "is_param": True}}}
        change = {"data/weights/model_weights_config.json": json.dumps(config).encode()}
        path = _rewrite(path, tmp_path / "bad.pt2", change)
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_onnx_and_pt2_uploads(client: TestClient, settings: Settings, tmp_path: Path, kind: str) -> None:
    data = _onnx_bytes() if kind == "onnx" else _pt2_bytes(tmp_path)
    response = post_model(client, data, f"teacher.{kind}")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == kind and body["path"] == f"uploads/models/{body['id']}.{kind}"
    assert body["spec_fragment"] == {"teacher": {"model": {"kind": kind, "path": body["path"]}}}
    assert body["details"]["operators"]
    assert (settings.data_path / body["path"]).read_bytes() == data
    job = client.post("/v1/jobs", json={"teacher": body["spec_fragment"]["teacher"]})
    assert job.status_code == 202, job.text
    refused = assert_problem(post_model(client, data, f"t.{kind}", architecture='{"kind": "mlp"}'), 422)
    assert refused["errors"][0]["field"] == "architecture"


def test_bad_onnx_and_pt2_uploads_are_refused(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    custom = assert_problem(post_model(client, _onnx_bytes(domain="com.evil"), "t.onnx"), 422)
    assert "com.evil::Leak" in custom["detail"]
    external = assert_problem(post_model(client, _onnx_bytes(external=True), "t.onnx"), 422)
    assert "external file" in external["detail"]
    junk = assert_problem(post_model(client, b"\x08\x07junk", "t.bin", format="onnx"), 422)
    assert "ONNX" in junk["detail"]
    pickled = assert_problem(post_model(client, _pt2_bytes(tmp_path, pickled_weight=True), "t.pt2"), 422)
    assert "pickle" in pickled["detail"]
    assert not list((settings.data_path / "uploads/models").glob("*.onnx"))
    assert not list((settings.data_path / "uploads/models").glob("*.pt2"))


def test_safetensors_upload_needs_a_valid_architecture(client: TestClient, tmp_path: Path) -> None:
    data = safetensors_bytes(tmp_path)
    arch = {"kind": "mlp", "hidden": [32]}
    response = post_model(client, data, "w.safetensors", architecture=json.dumps(arch))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "safetensors" and body["path"].endswith(".safetensors")
    assert body["details"]["tensors"] == 2 and body["details"]["parameters"] == 15
    assert body["details"]["architecture"]["kind"] == "mlp"
    assert body["spec_fragment"]["teacher"]["checkpoint"] == body["path"]
    job = client.post("/v1/jobs", json={"teacher": body["spec_fragment"]["teacher"]})
    assert job.status_code == 202, job.text

    missing = assert_problem(post_model(client, data, "w.safetensors"), 422)
    assert missing["errors"][0]["field"] == "architecture"
    unknown = assert_problem(post_model(client, data, architecture='{"kind": "transformer"}'), 422)
    assert unknown["errors"][0]["field"] == "architecture.kind" and "'mlp'" in unknown["errors"][0]["message"]
    wrong = assert_problem(post_model(client, data, architecture='{"kind": "mlp", "hidden": "x"}'), 422)
    assert wrong["errors"][0]["field"] == "architecture.hidden"
    assert_problem(post_model(client, data, architecture="{not json"), 422)
    bad_format = assert_problem(post_model(client, data, format="pickle"), 422)
    assert bad_format["errors"][0]["field"].endswith("format")


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[:-3], "the file holds"),
        (lambda d: (10**9).to_bytes(8, "little") + d[8:], "header length"),
        (lambda d: d[:8] + b"[" + d[9:], "not JSON"),
        (lambda d: b"\x01\x02", "shorter than"),
        (lambda d: d.replace(b'"F32"', b'"F99"'), "unknown dtype"),
    ],
)
def test_garbage_safetensors_refused(client: TestClient, tmp_path: Path, mangle: Any, message: str) -> None:
    data = mangle(safetensors_bytes(tmp_path))
    body = assert_problem(post_model(client, data, format="safetensors", architecture='{"kind": "mlp"}'), 422)
    assert message in body["detail"]


def test_oversized_uploads_are_413(db_url: str, tmp_path: Path, broker: FakeBroker, member: Member) -> None:
    settings = make_settings(tmp_path, db_url, max_upload_bytes=1000)
    app = create_app(settings, publish=broker.publish, run_dispatcher=False, check_broker=lambda: None)
    with TestClient(app, headers=member.headers) as client:
        # within the request's slack for multipart framing, but the file itself is too big
        assert_problem(post_model(client, b"x" * 5000), 413)
        # a declared length far past the limit is refused before reading
        big = b"x" * (settings.max_upload_bytes + 200_000)
        assert_problem(post_model(client, big), 413)
        assert_problem(client.post("/v1/datasets", files={"file": ("d.npz", big)}), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
            for _ in range(200):
                yield b"y" * 1024

        streamed = client.post(
            "/v1/models", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert_problem(streamed, 413)
    assert not [p for p in (settings.data_path / "uploads").rglob("*") if p.is_file()]


def test_uploads_need_multipart(client: TestClient) -> None:
    assert_problem(client.post("/v1/models", json={"file": "x"}), 415)
    assert_problem(
        client.post("/v1/datasets", content=b"PK..", headers={"content-type": "application/zip"}), 415
    )
    assert_problem(client.post("/v1/models", files={"other": ("a", b"x")}), 422)


# ---------------------------------------------------------------- datasets


def post_dataset(client: TestClient, data: bytes) -> Any:
    return client.post("/v1/datasets", files={"file": ("digits.npz", data, "application/octet-stream")})


def test_npz_upload(client: TestClient, settings: Settings) -> None:
    data = npz_bytes()
    response = post_dataset(client, data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "dataset" and body["path"] == f"uploads/datasets/{body['id']}.npz"
    assert body["summary"]["train_size"] == 30 and body["summary"]["input_shape"] == [1, 6, 6]
    assert body["summary"]["num_classes"] == 3 and body["summary"]["test_size"] == 9
    assert body["spec_fragment"] == {"data": {"kind": "npz", "path": body["path"]}}
    assert (settings.data_path / body["path"]).read_bytes() == data
    job = client.post("/v1/jobs", json={"data": body["spec_fragment"]["data"]})
    assert job.status_code == 202, job.text
    assert client.get(f"/v1/datasets/{body['id']}").json()["summary"] == body["summary"]
    assert_problem(client.get(f"/v1/models/{body['id']}"), 404)  # a dataset, not a model


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_is_422_naming_the_array(client: TestClient, case: str) -> None:
    data, field, message = BAD_NPZ[case]
    body = assert_problem(post_dataset(client, data), 422)
    assert body["errors"][0]["field"] == field
    assert message in body["detail"]
