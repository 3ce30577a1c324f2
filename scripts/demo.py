"""`make demo`: start the embedded service, submit the MNIST-1D job over HTTP, follow it, show the result.

    .venv/bin/python scripts/demo.py [--spec examples/mnist1d.yaml] [--home runs/demo] [--keep-serving]

Everything goes through the public HTTP API, as any client would: POST /v1/jobs, polling
GET /v1/jobs/{id} with If-None-Match, GET /v1/jobs/{id}/artifacts and a checksum-verified download.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 120)  # logs and CI: no wrapping at 80


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the service exited with code {server.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    sys.exit("the service did not become ready in time")


def follow(client: httpx.Client, job_id: str) -> dict:  # type: ignore[type-arg]
    etag, last_line = None, ""
    while True:
        r = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": etag} if etag else {})
        if r.status_code == 200:
            etag, job = r.headers.get("ETag"), r.json()
            p = job.get("progress") or {}
            line = f"{job['status']:<10} attempt {job['attempt']}"
            if p:
                eta = f", eta {p['eta_s']:.0f}s" if p.get("eta_s") else ""
                line += f"  {p['stage']} epoch {p['epoch']}/{p['epochs']}  {100 * p['fraction']:5.1f}%{eta}"
            if line != last_line:
                console.print(line)
                last_line = line
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job  # type: ignore[no-any-return]
        time.sleep(1.0)


def show(client: httpx.Client, job: dict, home: Path) -> None:  # type: ignore[type-arg]
    report = job["report"]
    table = Table(title=report["verdict"])
    for col in ("model", "test top-1", "params", "MACs", "CPU ms (b1)"):
        table.add_column(col)
    for who in ("teacher", "baseline", "student"):
        m = report.get(who)
        if m:
            table.add_row(
                who,
                f"{m['test_top1']:.4f}",
                f"{m['params']:,}",
                f"{m.get('macs') or 0:,}",
                f"{m.get('latency_ms_cpu_b1') or 0:.3f}",
            )
    console.print(table)
    items = client.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]
    console.print(f"artifacts of job {job['id']} (stored under {home / 'artifacts' / job['id']}):")
    for a in items:
        console.print(f"  {a['name']:<22} {a['size']:>9,} bytes  {client.base_url.join(a['url'])}")
    student = next(a for a in items if a["name"] == "student_torchscript")
    target = home / "downloads" / student["filename"]
    target.parent.mkdir(parents=True, exist_ok=True)
    with client.stream("GET", student["url"]) as r, target.open("wb") as f:
        digest = hashlib.sha256()
        for chunk in r.iter_bytes():
            digest.update(chunk)
            f.write(chunk)
    ok = digest.hexdigest() == student["sha256"]
    console.print(f"downloaded the student to {target}: sha256 {'matches' if ok else 'DOES NOT MATCH'}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def member_token(admin: httpx.Client, *, user: str, team: str) -> str:
    """A new token for ``user`` of ``team``, both made on first use (a 409 means they exist)."""
    for path, body in (("/v1/teams", {"name": team}), ("/v1/users", {"name": user, "team": team})):
        r = admin.post(path, json=body)
        if r.status_code not in (201, 409):
            sys.exit(f"{path} refused ({r.status_code}): {r.text}")
    r = admin.post("/v1/tokens", json={"user": user, "label": "make demo"})
    if r.status_code != 201:
        sys.exit(f"/v1/tokens refused ({r.status_code}): {r.text}")
    return str(r.json()["token"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="examples/mnist1d.yaml")
    parser.add_argument("--home", default="runs/demo")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--keep-serving", action="store_true", help="leave the service running at the end")
    args = parser.parse_args()
    home = Path(args.home).resolve()
    port = free_port(args.port)
    admin_token = f"dst_{secrets.token_urlsafe(32)}"  # this run's admin (DISTILLERY_ADMIN_TOKEN)
    env = {**os.environ, "DISTILLERY_HOME": str(home), "DISTILLERY_ADMIN_TOKEN": admin_token}
    console.print(f"starting the embedded service on port {port} (data in {home})")
    distill = str(Path(sys.executable).with_name("distill"))
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "serve.log").open("ab")
    server = subprocess.Popen(
        [distill, "serve", "--port", str(port)], env=env, stdout=log, stderr=log, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30, headers=bearer(admin_token)) as admin:
            wait_ready(admin, server)
            token = member_token(admin, user="demo", team="demo")
        with httpx.Client(base_url=url, timeout=30, headers=bearer(token)) as client:
            spec = yaml.safe_load(Path(args.spec).read_text())
            r = client.post("/v1/jobs", json=spec)
            if r.status_code != 202:
                sys.exit(f"submission refused ({r.status_code}): {r.text}")
            job_id = r.json()["id"]
            console.print(
                f"submitted {args.spec} as user demo (team demo): job {job_id} ({r.headers['Location']})"
            )
            job = follow(client, job_id)
            if job["status"] != "succeeded":
                sys.exit(f"job {job['status']}: {job.get('error')}")
            show(client, job, home)
            if args.keep_serving:
                console.print(f"the service keeps running on {url} (Ctrl-C to stop); token of user demo:")
                console.print(token, soft_wrap=True)
                server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
