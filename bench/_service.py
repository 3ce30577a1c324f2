"""The embedded service for the benchmarks: ``distill serve`` in a temporary home, teams and
their clients, jobs run to their end, and the CPU time the service's processes have used."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml

ENDED = ("succeeded", "failed", "cancelled", "pruned")
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """Seconds of CPU ``pid`` used itself plus those of its children it has waited for (the
    worker's pool children and their engine processes, once each job is over)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime + cutime + cstime) / TICK


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


class EmbeddedService:
    def __init__(self, **env: str) -> None:
        self.env = env  # DISTILLERY_* settings of this service
        self.home = Path(tempfile.mkdtemp(prefix="distillery-bench-"))
        self.admin_token = f"dst_{secrets.token_urlsafe(32)}"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.clients: list[httpx.Client] = []

    def __enter__(self) -> Self:
        self.admin = self._client(self.admin_token)
        try:
            self.start()
        except BaseException:
            self.__exit__()  # no process or home left behind
            raise
        self.cpu_at_start = self.cpu_seconds()
        return self

    def command(self, port: str) -> list[str]:
        """The service's command line: ``distill serve``; a subclass runs another deployment."""
        return [str(Path(sys.executable).with_name("distill")), "serve", "--port", port]

    def start(self) -> None:
        """Start the service's processes (a session of their own) and wait until it is ready."""
        env = {
            **os.environ,
            **self.env,
            "DISTILLERY_HOME": str(self.home),
            "DISTILLERY_ADMIN_TOKEN": self.admin_token,
        }
        log = (self.home / "serve.log").open("ab")
        port = self.url.rsplit(":", 1)[1]
        self.server = subprocess.Popen(
            self.command(port), env=env, stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise SystemExit(f"the service exited:\n{self.log_tail()}")
            try:
                if self.admin.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit(f"the service was not ready in 180 s:\n{self.log_tail()}")
        time.sleep(2)  # the worker's start-up, outside what is measured

    def log_tail(self, lines: int = 30) -> str:
        """The end of the service's log (its home goes when the service stops)."""
        return "\n".join((self.home / "serve.log").read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the service's processes; its home (database, files) stays for a later ``start``."""
        if self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGCONT)  # a paused service must be able to end
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
        for pid in _children(self.server.pid):  # a worker still finishing a job: no one waits for it
            os.kill(pid, signal.SIGKILL)

    def pause(self) -> None:
        """Stop every process of the service (SIGSTOP), so that it uses no CPU while another
        side of a comparison is measured; ``resume`` continues them."""
        os.killpg(self.server.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.server.pid, signal.SIGCONT)

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        for client in self.clients:
            client.close()
        if hasattr(self, "server"):
            self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def _client(self, token: str) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {token}"})
        self.clients.append(client)
        return client

    def member(self, team: str) -> httpx.Client:
        """A new team with one member; the API as that member."""
        assert self.admin.post("/v1/teams", json={"name": team}).status_code == 201
        assert self.admin.post("/v1/users", json={"name": f"{team}-user", "team": team}).status_code == 201
        return self._client(self.admin.post("/v1/tokens", json={"user": f"{team}-user"}).json()["token"])

    def cpu_seconds(self) -> float:
        """CPU time of the service's whole process tree so far: every live process (the API, the
        worker, its engine server) with what its ended children used (the jobs' processes)."""
        total, todo = 0.0, [self.server.pid]
        while todo:
            pid = todo.pop()
            try:
                total += _cpu_of(pid)
            except OSError:
                continue  # it ended meanwhile: its parent counts it once reaped
            todo += _children(pid)
        return total

    def cpu_used(self) -> float:
        return self.cpu_seconds() - self.cpu_at_start


def submit(client: httpx.Client, spec: dict[str, Any]) -> str:
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def wait(client: httpx.Client, job_id: str) -> dict[str, Any]:
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ENDED:
        time.sleep(0.5)
    return job  # type: ignore[no-any-return]


def events(client: httpx.Client, job_id: str) -> list[str]:
    page = client.get(f"/v1/jobs/{job_id}/events", params={"format": "json"}).json()
    return [e["message"] for e in page["items"]]


def bench_spec(path: str, scale: float = 1.0) -> dict[str, Any]:
    """The spec at ``path`` with exports reduced to safetensors, no compression, no speed
    measurement (the same for every side of a comparison), every stage's epochs times ``scale``."""
    spec: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    spec["export"], spec["compress"] = ["safetensors"], []
    spec["runtime"] = {**spec.get("runtime", {}), "measure_speed": False}
    if scale != 1.0:
        spec["teacher"]["train"]["epochs"] = max(1, round(spec["teacher"]["train"]["epochs"] * scale))
        spec["distill"]["epochs"] = max(9, round(spec["distill"]["epochs"] * scale))
    return spec
