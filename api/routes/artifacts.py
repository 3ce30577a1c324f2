"""A job's artifacts, and their download: streamed in chunks with the recorded checksum."""

from __future__ import annotations

import base64
import mimetypes
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Path
from fastapi.responses import Response, StreamingResponse

from api.auth import CallerDep, JobDep
from api.deps import SessionDep, StateDep
from api.problems import Problem
from api.schemas import ArtifactList
from api.views import artifact_out
from domain import artifacts

router = APIRouter(tags=["artifacts"])


@router.get(
    "/v1/jobs/{job_id}/artifacts",
    response_model=ArtifactList,
    summary="A job's artifacts",
    responses={404: {"model": Problem, "description": "No such job."}},
)
def list_artifacts(job: JobDep, session: SessionDep) -> ArtifactList:
    return ArtifactList(items=[artifact_out(a) for a in artifacts.of_job(session, job.id)])


def _disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


@router.get(
    "/v1/artifacts/{artifact_id}",
    summary="Download an artifact",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file, streamed."},
        304: {"description": "Unchanged (If-None-Match matched the checksum)."},
        404: {"model": Problem, "description": "No such artifact."},
        410: {"model": Problem, "description": "The file is no longer in the artifact store."},
    },
)
def download_artifact(
    artifact_id: Annotated[str, Path(max_length=64)],
    session: SessionDep,
    state: StateDep,
    caller: CallerDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Any:
    """The file with `Content-Length`, `ETag: "<sha256>"`, `Digest: sha-256=<base64>` and
    `X-Checksum-SHA256: <hex>`. It is checked while it streams: a file that no longer matches
    its checksum is cut short, so the client sees a failed download rather than bad bytes."""
    artifact = artifacts.get_visible(session, caller, artifact_id)
    tag = f'"{artifact.sha256}"'
    if if_none_match and tag in {t.strip().removeprefix("W/") for t in if_none_match.split(",")}:
        return Response(status_code=304, headers={"ETag": tag})
    chunks = artifacts.read(state.artifacts, artifact)  # 410 now if the file is gone
    media_type = mimetypes.guess_type(artifact.filename)[0] or "application/octet-stream"
    headers = {
        "Content-Length": str(artifact.size),
        "ETag": tag,
        "Digest": "sha-256=" + base64.b64encode(bytes.fromhex(artifact.sha256)).decode(),
        "X-Checksum-SHA256": artifact.sha256,
        "Content-Disposition": _disposition(artifact.filename),
    }
    return StreamingResponse(chunks, media_type=media_type, headers=headers)
