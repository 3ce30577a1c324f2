"""The API process never imports torch (DESIGN.md §2): checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_api_runs_without_importing_torch(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from fastapi.testclient import TestClient
        from api.app import create_app
        from store.db import migrate
        from store.settings import Settings

        url = "sqlite:///{tmp_path}/d.db"
        migrate(url)
        settings = Settings(
            home="{tmp_path}", database_url=url, broker_url="memory://", admin_token="dst_admin-of-this-test"
        )
        app = create_app(settings)  # the default (Celery) publisher, made on first use
        with TestClient(app, headers={{"Authorization": "Bearer dst_admin-of-this-test"}}) as client:
            assert client.get("/v1/catalog").status_code == 200
            assert client.get("/v1/spec/schema").status_code == 200
            assert client.post("/v1/jobs", json={{"name": "x"}}).status_code == 202
            np.savez("{tmp_path}/d.npz", x_train=np.zeros((4, 3)), y_train=np.array([0, 1, 0, 1]),
                     x_test=np.zeros((2, 3)), y_test=np.array([0, 1]))
            with open("{tmp_path}/d.npz", "rb") as f:
                assert client.post("/v1/datasets", files={{"file": f}}).status_code == 201
            assert client.post("/v1/models", files={{"file": ("m.pt", b"junk")}}).status_code == 422
            assert client.get("/metrics").status_code == 200
        heavy = sorted(m for m in ("torch", "torchvision", "onnx", "onnxruntime") if m in sys.modules)
        assert not heavy, heavy
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
