"""A scripted session against the API, recorded as a transcript: every request, its status, the
headers a client reads and the body, with ids, secrets and times replaced by stable names.

``tests/api/test_surface.py`` replays it and compares with ``surface.json``, recorded before the
service side was reshaped (issue 11): the public surface must not move where nothing was meant to.
Only HTTP is used, plus a few raw SQL updates standing in for a worker (so the script does not
depend on the service's internal functions).

    python -m tests.api.surface > tests/api/surface.json    # record anew, deliberately
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from store import places
from store.db import migrate, session_scope
from store.settings import Settings

ADMIN_TOKEN = "dst_surface-admin-token"
SPEC: dict[str, Any] = {
    "name": "surface",
    "data": {"kind": "mnist1d", "train_limit": 300},
    "teacher": {"model": {"kind": "cnn1d", "channels": 8}, "train": {"epochs": 2}},
    "student": {"model": {"kind": "mlp", "hidden": [16]}},
    "distill": {"epochs": 3},
    "export": ["torchscript"],
}
_MODEL = {
    "test_top1": 0.9,
    "test_top5": 1.0,
    "test_nll": 0.3,
    "test_ece": 0.02,
    "params": 1000,
    "macs": 2000,
    "size_bytes": 4400,
    "best_epoch": 2,
}
REPORT: dict[str, Any] = {
    "report_version": 1,
    "name": "surface",
    "seed": 0,
    "dataset": {
        "kind": "mnist1d",
        "num_classes": 10,
        "input_shape": [1, 40],
        "train_size": 300,
        "val_size": 100,
        "test_size": 100,
    },
    "teacher": {**_MODEL, "test_top1": 0.95, "source": "trained"},
    "teachers": [],
    "baseline": {**_MODEL, "test_top1": 0.7, "agreement": 0.71},
    "student": {**_MODEL, "test_top1": 0.8, "agreement": 0.82, "exported_torchscript_test_top1": 0.8},
    "kd_gain": 0.1,
    "kd_gain_stderr": 0.06,
    "verdict": "distillation helped",
    "compression": {
        "params_ratio": 1.0,
        "macs_ratio": 1.0,
        "size_ratio": 1.0,
        "latency_speedup_cpu": None,
        "throughput_speedup_cpu": None,
    },
    "compressed": [],
    "timing": {"teacher_s": 1.0, "total_s": 3.0, "distill_samples_per_s": 1000.0},
    "artifacts": {"student_torchscript": "student.pt", "report": "report.json", "summary": "summary.md"},
    "environment": {
        "device": "cpu",
        "torch": "2.14.1",
        "distillery": "0.1.0",
        "python": "3.11",
        "cpu_threads": 2,
    },
}
_HEADERS = ("content-type", "location", "etag", "idempotent-replayed", "retry-after", "www-authenticate")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
_HEX = re.compile(r"\b[0-9a-f]{32}\b")
_SECRET = re.compile(r"dst_[A-Za-z0-9_-]{20,}")


class Recorder:
    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.names: dict[str, str] = {}
        self.entries: list[dict[str, Any]] = []

    def _name(self, match: re.Match[str]) -> str:
        return self.names.setdefault(match.group(0), f"<id{len(self.names) + 1}>")

    def scrub(self, value: Any) -> Any:
        if isinstance(value, dict):
            # a job list's cursor encodes a time and an id: opaque, and named like them
            return {
                k: "<cursor>"
                if k == "next_cursor" and isinstance(v, str) and not v.isdigit()
                else self.scrub(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        if isinstance(value, str):
            value = _TIME.sub("<time>", value)
            value = _SECRET.sub("<secret>", value)
            return _HEX.sub(self._name, value)
        return value

    def call(self, label: str, method: str, url: str, token: str | None = None, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.client.request(method, url, headers=headers, **kw)
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = f"<{len(response.content)} bytes>"
        kept = {h: response.headers[h] for h in _HEADERS if h in response.headers}
        if "etag" in kept:
            kept["etag"] = "<etag>"
        self.entries.append(
            self.scrub(
                {"label": label, "request": f"{method} {url}", "status": response.status_code}
                | {"headers": kept, "body": body}
            )
        )
        return body


def _script(rec: Recorder, db_url: str) -> None:
    admin = ADMIN_TOKEN
    rec.call("create team", "POST", "/v1/teams", admin, json={"name": "surface", "max_queued": 5})
    rec.call("team exists", "POST", "/v1/teams", admin, json={"name": "surface"})
    rec.call("create user", "POST", "/v1/users", admin, json={"name": "ann", "team": "surface"})
    rec.call("user, unknown team", "POST", "/v1/users", admin, json={"name": "bob", "team": "nope"})
    rec.call(
        "create viewer", "POST", "/v1/users", admin, json={"name": "vic", "team": "surface", "role": "viewer"}
    )
    ann = rec.call("token", "POST", "/v1/tokens", admin, json={"user": "ann", "label": "laptop"})["token"]
    vic = rec.call("viewer token", "POST", "/v1/tokens", admin, json={"user": "vic"})["token"]
    rec.call("token, unknown user", "POST", "/v1/tokens", admin, json={"user": "nobody"})
    rec.call("me", "GET", "/v1/me", ann)
    rec.call("no token", "GET", "/v1/jobs")
    rec.call("bad token", "GET", "/v1/jobs", "dst_unknown")
    first = rec.call("submit", "POST", "/v1/jobs", ann, json=SPEC)["id"]
    key = {"Idempotency-Key": "k1"}
    second = rec.call("submit with key", "POST", "/v1/jobs", ann, json=SPEC | {"seed": 1}, headers=key)["id"]
    rec.call("replay", "POST", "/v1/jobs", ann, json=SPEC | {"seed": 1}, headers=key)
    rec.call("key reused", "POST", "/v1/jobs", ann, json=SPEC | {"seed": 2}, headers=key)
    rec.call("invalid spec", "POST", "/v1/jobs", ann, json=SPEC | {"distill": {"epochs": -1}, "extra": 1})
    rec.call("unknown kind", "POST", "/v1/jobs", ann, json=SPEC | {"student": {"model": {"kind": "nope"}}})
    rec.call(
        "yaml spec",
        "POST",
        "/v1/jobs",
        ann,
        content="name: y\ndata: {kind: digits}\n",
        headers={"Content-Type": "application/yaml"},
    )
    rec.call("text spec", "POST", "/v1/jobs", ann, content="x", headers={"Content-Type": "text/plain"})
    rec.call("viewer submits", "POST", "/v1/jobs", vic, json=SPEC)
    rec.call(
        "upload names a missing file",
        "POST",
        "/v1/jobs",
        ann,
        json=SPEC | {"data": {"kind": "npz", "path": "uploads/x.npz"}},
    )
    with session_scope(db_url) as session:  # what the dispatcher's pass does: places the jobs
        places.refresh(session)
    rec.call("list", "GET", "/v1/jobs", ann)
    rec.call("list by status", "GET", "/v1/jobs?status=queued&limit=1", ann)
    rec.call("list bad status", "GET", "/v1/jobs?status=bogus", ann)
    rec.call("list bad cursor", "GET", "/v1/jobs?cursor=zzz", ann)
    rec.call("get", "GET", f"/v1/jobs/{first}", ann)
    rec.call("get, unknown", "GET", "/v1/jobs/0123456789abcdef0123456789abcdef", ann)
    rec.call("cancel queued", "POST", f"/v1/jobs/{first}/cancel", ann)
    rec.call("cancel again", "POST", f"/v1/jobs/{first}/cancel", ann)
    rec.call("viewer cancels", "POST", f"/v1/jobs/{second}/cancel", vic)
    rec.call("delete live", "DELETE", f"/v1/jobs/{second}", ann)
    rec.call("delete", "DELETE", f"/v1/jobs/{first}", ann)
    rec.call("get deleted", "GET", f"/v1/jobs/{first}", ann)
    engine = create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE jobs SET status='succeeded', attempt=1, report=:report, "
                "progress=:progress, version=version+1 WHERE id=:id"
            ),
            {
                "report": json.dumps(REPORT),
                "progress": json.dumps(
                    {"stage": "student", "epoch": 3, "epochs": 3, "fraction": 1.0, "eta_s": 0.0}
                ),
                "id": second,
            },
        )
        connection.execute(
            text(
                "INSERT INTO metrics (job_id, stage, epoch, step, name, value) "
                "VALUES (:id, 'student', 1, 10, 'val_top1', 0.5)"
            ),
            {"id": second},
        )
    engine.dispose()
    rec.call("get succeeded", "GET", f"/v1/jobs/{second}", ann)
    rec.call("list with result", "GET", "/v1/jobs", ann)
    rec.call("metrics", "GET", f"/v1/jobs/{second}/metrics", ann)
    rec.call("metrics bad after", "GET", f"/v1/jobs/{second}/metrics?after=-5", ann)
    rec.call("events", "GET", f"/v1/jobs/{second}/events?format=json", ann)
    rec.call("artifacts", "GET", f"/v1/jobs/{second}/artifacts", ann)
    rec.call("artifact, unknown", "GET", "/v1/artifacts/0123456789abcdef0123456789abcdef", ann)
    rec.call("audit", "GET", "/v1/audit", ann)
    rec.call("teams", "GET", "/v1/teams", ann)
    rec.call("team", "GET", "/v1/teams/surface", admin)
    rec.call("team, hidden", "GET", "/v1/teams/admin", ann)
    rec.call("patch team", "PATCH", "/v1/teams/surface", admin, json={"max_running": 2})
    rec.call("patch team, member", "PATCH", "/v1/teams/surface", ann, json={"max_running": 2})
    rec.call("users", "GET", "/v1/users?team=surface", admin)
    rec.call("tokens", "GET", "/v1/tokens?user=ann", admin)
    rec.call("pool", "GET", "/v1/pool", ann)
    rec.call("validate", "POST", "/v1/spec/validate", ann, json=SPEC)
    rec.call("validate bad", "POST", "/v1/spec/validate", ann, json={"data": {"kind": "x"}})
    rec.call("datasets", "GET", "/v1/datasets", ann)
    rec.call("models", "GET", "/v1/models", ann)
    rec.call("dataset, unknown", "GET", "/v1/datasets/0123456789abcdef0123456789abcdef", ann)
    rec.call("catalog", "GET", "/v1/catalog", ann)
    rec.call(
        "upload not multipart",
        "POST",
        "/v1/datasets",
        ann,
        content=b"x",
        headers={"Content-Type": "application/octet-stream"},
    )
    rec.call("revoke unknown token", "DELETE", "/v1/tokens/nope", admin)


def transcript() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        db_url = f"sqlite:///{home / 'surface.db'}"
        migrate(db_url)
        settings = Settings(
            home=home,
            database_url=db_url,
            broker_url="memory://",
            artifacts_url=str(home / "artifacts"),
            data_root=home / "data",
            admin_token=ADMIN_TOKEN,
            rate_limit="100000/minute",
        )
        app = create_app(
            settings, publish=lambda job_id, queue: None, run_dispatcher=False, check_broker=lambda: None
        )
        with TestClient(app) as client:
            rec = Recorder(client)
            _script(rec, db_url)
        return rec.entries


if __name__ == "__main__":
    json.dump(transcript(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
