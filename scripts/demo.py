"""`make demo`: start the embedded service, submit the MNIST-1D job over HTTP, follow it, show the result.

    .venv/bin/python scripts/demo.py [--spec examples/mnist1d.yaml] [--home runs/demo] [--keep-serving]

Everything goes through the public HTTP API: the admin API makes a team, a user and a token, and
then the `distill` client commands, as that user, submit the job, follow it live to its report
and download the student with its checksum verified (docs/cli.md).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _local import free_port  # scripts/, on the path when a script runs
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 120)  # logs and CI: no wrapping at 80


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


def distill_cli(*args: str, env: dict[str, str], capture: bool = False) -> str:
    """Run ``distill ARGS``; its exit code, when not 0, ends the demo with it."""
    distill = str(Path(sys.executable).with_name("distill"))
    done = subprocess.run([distill, *args], env=env, stdout=subprocess.PIPE if capture else None, text=True)
    if done.returncode != 0:
        sys.exit(done.returncode)
    return done.stdout or ""


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
        # From here on, what a member of the team would type (docs/cli.md)
        user_env = {**os.environ, "DISTILLERY_URL": url, "DISTILLERY_TOKEN": token}
        job_id = distill_cli("submit", args.spec, env=user_env, capture=True).strip()
        console.print(f"submitted {args.spec} as user demo (team demo): job {job_id}")
        console.print(f"dashboard: {url}/#/jobs/{job_id} (log in with the token of user demo)")
        distill_cli("follow", job_id, env=user_env)  # live progress, then the report table
        distill_cli("download", job_id, "--out", str(home / "downloads"), env=user_env)  # sha256 checked
        console.print(f"artifacts of job {job_id} are stored under {home / 'artifacts' / job_id}")
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
