"""Schema-driven fuzzing: cases generated from the API's own OpenAPI document, valid ones and
broken ones, sent in-process as an admin and as a team member. Any answer but a 5xx is fine here
(the other tests say which 4xx); a 5xx is a bug, and the test lists each one found."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from api.app import create_app
from store.db import session_scope
from store.identity import ensure_admin
from tests.api.conftest import FakeBroker, make_settings
from tests.api.support import ADMIN_TOKEN, move, new_member

pytestmark = pytest.mark.slow

# generated requests in all, over every operation and both callers; FUZZ_CASES=20000 and
# FUZZ_RANDOM=1 explore further than the suite's fixed, repeatable run
CASES = int(os.environ.get("FUZZ_CASES", "1200"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
# The event stream follows a live job until it ends; the fuzzer asks for JSON pages instead.
STREAM = ("GET", "/v1/jobs/{job_id}/events")


def _seed(db_url: str, client: Any) -> dict[str, str]:
    """A finished job and a member: real ids for some cases to reach past the 404s."""
    member = new_member(db_url)
    tiny = {
        "data": {"kind": "synthetic"},
        "teacher": {"model": {"kind": "mlp", "hidden": [4]}},
        "student": {"model": {"kind": "mlp", "hidden": [4]}},
    }
    answer = client.post("/v1/jobs", json=tiny, headers=member.headers)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    move(db_url, job_id, "starting", "running", "succeeded")
    return {"member": member.token, "team": member.team, "user": member.user, "job_id": job_id}


@pytest.fixture(scope="module")
def fuzz_app(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The app on a fresh database of each kind (``db_url``: SQLite, then PostgreSQL)."""
    home: Path = tmp_path_factory.mktemp("fuzz")
    with session_scope(db_url) as session:
        ensure_admin(session, ADMIN_TOKEN)
    app = create_app(
        make_settings(home, db_url),
        publish=FakeBroker().publish,
        run_dispatcher=False,
        check_broker=lambda: None,
    )
    return app, db_url


def test_no_generated_request_gets_a_server_error(fuzz_app: Any) -> None:
    from fastapi.testclient import TestClient

    app, db_url = fuzz_app
    with TestClient(app) as client:
        seed = _seed(db_url, client)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    known = {"job_id": seed["job_id"], "name": seed["team"]}
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) == STREAM:
            strategies.append(operation.as_strategy(query={"format": "json"}))
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies.append(operation.as_strategy(generation_mode=mode))
        params = {p.name for p in operation.path_parameters}
        if params and params <= known.keys():
            strategies.append(operation.as_strategy(path_parameters={p: known[p] for p in params}))
    tokens = [ADMIN_TOKEN, seed["member"]]
    seen: Counter[int] = Counter()
    failures: list[str] = []

    @settings(
        max_examples=CASES,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies), token=st.sampled_from(tokens))
    def run(case: Any, token: str) -> None:
        try:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
        except Exception as e:  # the in-process client re-raises what the app did not handle
            seen[500] += 1
            failures.append(f"{type(e).__name__}: {e} on {case.method} {case.formatted_path}")
            return
        seen[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(
                f"{response.status_code} on {case.method} {case.formatted_path}: {response.text[:300]}"
            )

    run()
    total = sum(seen.values())
    print(f"fuzzed {total} requests on {db_url.split(':')[0]}: {dict(sorted(seen.items()))}")
    assert total >= 1000, seen
    assert not failures, "\n\n".join(failures[:20])
