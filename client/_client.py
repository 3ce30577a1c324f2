"""``Client``: the Distillery API over HTTP, one method per route."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from client._config import DEFAULT_URL, normalize_url
from client._errors import FieldError, Invalid, Unreachable, error_for
from client._models import (
    Artifact,
    EventPage,
    Job,
    JobPage,
    Me,
    Metric,
    MetricPage,
    Pool,
    Sweep,
    SweepPage,
    Upload,
    drain,
)
from client._transfer import download, upload_file
from client._wait import OnUpdate
from client._wait import wait as _wait

JOBS_PAGE = 200  # the API's largest page


def parse_spec_text(text: str) -> dict[str, Any]:
    """A YAML (or JSON) job spec as a mapping; ``Invalid`` when it is neither or not a mapping."""
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _invalid_body("the spec is not valid YAML or JSON", str(e)) from None
    if not isinstance(spec, dict):
        raise _invalid_body("invalid spec", f"a mapping of fields, not {type(spec).__name__}")
    return spec


def _invalid_body(headline: str, reason: str) -> Invalid:
    # the shape the API gives a malformed body: a 422 naming the field "body"
    return Invalid(422, headline, errors=[FieldError("body", reason)])


class Client:
    """A connection to one Distillery server as one token's user.

    Every method raises a ``ClientError``: ``Unreachable`` when the server does not answer, and an
    ``ApiError`` subclass (``AuthError``, ``NotFound``, ``Invalid``, ``Conflict``) when it refuses.
    Local files that cannot be read or written (uploads, downloads) raise ``OSError``.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalize_url(url)
        headers = {"User-Agent": "distillery-client", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            return self._http.send(request, stream=stream)
        except httpx.TimeoutException:
            raise Unreachable(self.url, f"no answer within {self._http.timeout.read} s") from None
        except httpx.TransportError as e:
            raise Unreachable(self.url, _reason(e)) from None

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One request; any status >= 400 (or 3xx not in ``ok``) raises the matching ``ApiError``."""
        response = self._send(self._http.build_request(method, path, **kwargs))
        if response.status_code >= 300 and response.status_code not in ok:
            raise error_for(response)
        return response

    def _get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    # ------------------------------------------------------------------ who and where

    def me(self) -> Me:
        return Me.model_validate(self._get("/v1/me"))

    def pool(self) -> Pool:
        return Pool.model_validate(self._get("/v1/pool"))

    # ------------------------------------------------------------------ jobs

    def submit(self, spec: Mapping[str, Any] | str, *, idempotency_key: str | None = None) -> Job:
        """Submit a spec (a mapping, or YAML/JSON text parsed here) and return the queued job.

        With ``idempotency_key`` a retry of the same submission returns the same job."""
        body = parse_spec_text(spec) if isinstance(spec, str) else dict(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self.request("POST", "/v1/jobs", json=body, headers=headers)
        return _job(response)

    def jobs(
        self,
        *,
        status: str | list[str] | None = None,
        owner: str | None = None,
        name: str | None = None,
        team: str | None = None,
        sweep: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first; pass its ``next_cursor`` as ``cursor`` for the next.
        ``sweep``: one sweep's trials."""
        statuses = [status] if isinstance(status, str) else status
        data = self._get(
            "/v1/jobs",
            status=statuses,
            owner=owner,
            name=name,
            team=team,
            sweep=sweep,
            limit=limit,
            cursor=cursor,
        )
        return JobPage.model_validate(data)

    def iter_jobs(self, *, page_size: int = JOBS_PAGE, **filters: Any) -> Iterator[Job]:
        """Every job matching ``filters`` (those of ``jobs``), fetching pages as needed."""
        cursor = None
        while True:
            page = self.jobs(limit=page_size, cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def job(self, job_id: str, *, etag: str | None = None) -> Job | None:
        """The job; with the ``etag`` of an earlier answer, ``None`` while it is unchanged (304)."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self.request("GET", f"/v1/jobs/{job_id}", headers=headers, ok=(304,))
        return None if response.status_code == 304 else _job(response)

    def get_job(self, job_id: str) -> Job:
        job = self.job(job_id)
        assert job is not None  # no etag sent: never a 304
        return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a waiting one at once, a running one within seconds (``cancelling``)."""
        return _job(self.request("POST", f"/v1/jobs/{job_id}/cancel"))

    def delete(self, job_id: str) -> None:
        """Delete a finished job's metrics and artifacts; ``Conflict`` while it is live."""
        self.request("DELETE", f"/v1/jobs/{job_id}")

    def metrics(
        self,
        job_id: str,
        *,
        after: str | None = None,
        stage: str | None = None,
        name: str | list[str] | None = None,
        limit: int | None = None,
    ) -> MetricPage:
        """Metric rows after the cursor ``after`` (``next_cursor`` of the previous answer)."""
        names = [name] if isinstance(name, str) else name
        data = self._get(f"/v1/jobs/{job_id}/metrics", after=after, stage=stage, name=names, limit=limit)
        return MetricPage.model_validate(data)

    def all_metrics(self, job_id: str, **filters: Any) -> list[Metric]:
        """Every metric row so far (``filters``: ``stage``, ``name``)."""
        rows, _cursor = drain(lambda after: self.metrics(job_id, after=after, **filters), None)
        return rows

    def events(self, job_id: str, *, after: str | None = None, limit: int | None = None) -> EventPage:
        """The job's events (its audit trail and log lines) after the cursor ``after``."""
        data = self._get(f"/v1/jobs/{job_id}/events", format="json", after=after, limit=limit)
        return EventPage.model_validate(data)

    def wait(
        self,
        job_id: str,
        *,
        on_update: OnUpdate | None = None,
        interval: float = 1.0,
        timeout: float | None = None,
        metrics: bool = False,
        events: bool = False,
    ) -> Job:
        """Poll until the job is finished and return it (``WaitTimeout`` after ``timeout`` s).

        ``on_update`` gets an ``Update`` whenever the job changed, and with ``metrics`` /
        ``events`` the rows written since the previous one. Polls are conditional (``304`` while
        the job is unchanged) and incremental."""
        return _wait(
            self,
            job_id,
            on_update=on_update,
            interval=interval,
            timeout=timeout,
            metrics=metrics,
            events=events,
        )

    # ------------------------------------------------------------------ sweeps

    def create_sweep(self, request: Mapping[str, Any] | str) -> Sweep:
        """Start a sweep (a mapping, or YAML/JSON text): its base spec, the parameters to vary,
        the method, the budget and the early stopping; its first trial is queued at once."""
        body = parse_spec_text(request) if isinstance(request, str) else dict(request)
        return Sweep.model_validate(self.request("POST", "/v1/sweeps", json=body).json())

    def sweeps(self, *, limit: int | None = None, cursor: str | None = None) -> SweepPage:
        """One page of your team's sweeps, newest first (without their trials)."""
        return SweepPage.model_validate(self._get("/v1/sweeps", limit=limit, cursor=cursor))

    def sweep(self, sweep_id: str) -> Sweep:
        """A sweep with every trial, the best one and the parameters' importances."""
        return Sweep.model_validate(self._get(f"/v1/sweeps/{sweep_id}"))

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """No trial starts any more and the live ones are cancelled; ``Conflict`` once it ended."""
        return Sweep.model_validate(self.request("POST", f"/v1/sweeps/{sweep_id}/cancel").json())

    def repeat_best(self, sweep_id: str, repeats: int = 3) -> Job:
        """A new job: the sweep's best trial with ``repeats`` seeds (its gain with an interval);
        ``Conflict`` while no trial completed."""
        return _job(self.request("POST", f"/v1/sweeps/{sweep_id}/repeat", json={"repeats": repeats}))

    # ------------------------------------------------------------------ files

    def artifacts(self, job_id: str) -> list[Artifact]:
        data = self._get(f"/v1/jobs/{job_id}/artifacts")
        return [Artifact.model_validate(a) for a in data.get("items", [])]

    def download(self, artifact: Artifact, dest: Path | str) -> Path:
        """Stream an artifact to ``dest`` (a directory, or a file path) and return the file's path.

        The SHA-256 is checked against the one the API listed: on a mismatch, or a transfer cut
        short, nothing is left at the destination and ``ChecksumMismatch`` / ``Unreachable`` is
        raised."""
        request = self._http.build_request("GET", artifact.url)
        return download(self._send, request, artifact, Path(dest), self.url)

    def upload_model(
        self,
        path: Path | str,
        *,
        format: str | None = None,
        architecture: Mapping[str, Any] | str | None = None,
    ) -> Upload:
        """Upload a teacher: TorchScript, or safetensors weights with their registry architecture
        (a mapping or its JSON, e.g. ``{"kind": "cnn1d", "channels": 64}``)."""
        form: dict[str, str] = {}
        if format:
            form["format"] = format
        if architecture is not None:
            form["architecture"] = (
                architecture if isinstance(architecture, str) else json.dumps(dict(architecture))
            )
        return self._upload("/v1/models", Path(path), form)

    def upload_dataset(self, path: Path | str) -> Upload:
        """Upload an ``.npz`` dataset (``x_train``, ``y_train``, ``x_test``, ``y_test``)."""
        return self._upload("/v1/datasets", Path(path), {})

    def _upload(self, route: str, path: Path, form: dict[str, str]) -> Upload:
        response = upload_file(self.request, route, path, form)
        return Upload.model_validate(response.json())


def _job(response: httpx.Response) -> Job:
    job = Job.model_validate(response.json())
    job._etag = response.headers.get("ETag")
    return job


def _reason(error: httpx.TransportError) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError) and "refused" in text.lower():
        return "connection refused (is the service running there?)"
    return text
