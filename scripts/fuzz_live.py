"""`make fuzz`: schemathesis against the running API's own /openapi.json, over HTTP.

    .venv/bin/python scripts/fuzz_live.py [--max-examples 40] [--port 8765] [--seed 1]

Starts the API (`distill api`: the embedded default's API process, SQLite and the file broker
under a throwaway home, with a fresh DISTILLERY_ADMIN_TOKEN), waits until it is ready, and runs
the `schemathesis run` CLI as that admin with the checks the API promises: no server error, no
status code and no content type that the document does not list: once over every operation but
token revocation, then over that one alone (see ``REVOKE``). It exits non-zero if either run
fails, or if fewer than ``MIN_CASES`` cases were sent in all.

No worker runs (``distill serve`` would start one): a valid spec the fuzzer submits stays queued
instead of training for minutes on this machine's CPU; the API answers the same either way. An
event stream on such a job never ends, so schemathesis reads it until ``--request-timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _local import free_port  # scripts/, on the path when a script runs

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance"
# The coverage phase is left out: it derives ~10,000 cases from the job spec's schema for each of
# the two spec routes (minutes each); the in-process fuzz test covers those routes every run.
PHASES = "examples,fuzzing,stateful"
# Learning ids from GET /v1/tokens, schemathesis revokes the very token it runs with, and every
# later case is a 401: that operation gets a run of its own, last.
REVOKE = "/v1/tokens/{token_id}"
MIN_CASES = 1000
READY_TIMEOUT_S = 60


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the API exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    sys.exit("the API did not become ready in time")


def schemathesis_command(
    url: str, token: str, args: argparse.Namespace, report: Path, only: str | None
) -> list[str]:
    """The run over every operation but ``REVOKE``, or (``only``) over that one alone."""
    binary = str(Path(sys.executable).with_name("schemathesis"))
    command = [binary, "run", f"{url}/openapi.json", "--checks", CHECKS]
    command += ["--phases", PHASES, "--max-examples", str(args.max_examples), "--seed", str(args.seed)]
    command += ["--header", f"Authorization: Bearer {token}", "--request-timeout", "5"]
    command += ["--report", "ndjson", "--report-ndjson-path", str(report)]
    command += ["--include-path", only] if only else ["--exclude-path", REVOKE]
    return command


def cases_sent(report: Path) -> int:
    """Test cases in a run's NDJSON events: each scenario's recorded cases, every phase."""
    total = 0
    for line in report.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished is not None:
            total += len(finished.get("recorder", {}).get("cases", {}))
    return total


def fuzz(url: str, token: str, args: argparse.Namespace, home: Path) -> tuple[int, int]:
    """(schemathesis's worst exit code, cases sent) over both runs."""
    worst, sent = 0, 0
    for only in (None, REVOKE):
        report = home / f"events-{sent}.ndjson"
        code = subprocess.run(schemathesis_command(url, token, args, report, only)).returncode
        worst = worst or code
        sent += cases_sent(report) if report.exists() else 0
    return worst, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=40, help="cases per operation and phase")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="distillery-fuzz-") as folder:
        home = Path(folder)
        port = free_port(args.port)
        url = f"http://127.0.0.1:{port}"
        token = f"dst_{secrets.token_urlsafe(32)}"
        # only this run's settings: an inherited DISTILLERY_DATABASE_URL must not point it elsewhere
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
        env |= {"DISTILLERY_HOME": str(home), "DISTILLERY_ADMIN_TOKEN": token}
        env["DISTILLERY_RATE_LIMIT"] = "1000000/minute"  # the fuzzer's cases, not 429s
        distill = str(Path(sys.executable).with_name("distill"))
        log = home / "api.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [distill, "api", "--home", str(home), "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_ready(url, server)
            code, sent = fuzz(url, token, args, home)
            print(f"fuzz_live: {sent} test cases sent to {url}")
            if code == 0 and sent < MIN_CASES:
                print(f"fuzz_live: fewer than {MIN_CASES} cases: raise --max-examples")
                code = 1
            if code != 0:
                print("fuzz_live: the API's log ends with:\n" + "\n".join(log.read_text().splitlines()[-40:]))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    sys.exit(code)


if __name__ == "__main__":
    main()
