"""Uploads: teacher models (TorchScript, ONNX, torch.export, or safetensors + a registry architecture) and
datasets (``.npz`` archives), stored under the data root for specs to name.

Each upload streams to a temporary file next to its destination, hashed and counted as it
goes (413 past ``max_upload_bytes``), is checked without torch and without unpickling
(``api.model_formats``), and is then recorded by ``domain.uploads`` (the team's storage quota,
the rename into place, the row): a half-written or refused file is never visible under its
final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic import TypeAdapter

from api.auth import CallerDep, WriterDep
from api.deps import SessionDep, SettingsDep
from api.model_formats import (
    check_dataset,
    check_export_program,
    check_onnx,
    check_safetensors,
    check_torchscript,
    is_pt2,
    looks_like_zip,
)
from api.problems import Problem
from api.schemas import UploadList, UploadOut
from api.validation import validate_with
from core.errors import InvalidRequestError, TooLargeError, UnsupportedMediaTypeError
from core.spec import ArchitectureSpec
from domain import uploads
from domain.uploads import PROGRAM_FORMATS, Staged
from store.models import Upload

CHUNK = 1 << 20
_architecture = TypeAdapter(ArchitectureSpec)


def require_multipart(request: Request) -> None:
    message = Message()
    message["content-type"] = request.headers.get("content-type", "")
    if message.get_content_type() != "multipart/form-data":
        raise UnsupportedMediaTypeError("send the file as multipart/form-data")


router = APIRouter(tags=["uploads"], dependencies=[Depends(require_multipart)])
read_router = APIRouter(tags=["uploads"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "Viewers cannot upload."},
    409: {"model": Problem, "description": "The team's storage quota would be exceeded."},
    413: {"model": Problem, "description": "Larger than the upload limit."},
    415: {"model": Problem, "description": "Not multipart/form-data."},
    422: {"model": Problem, "description": "Not a valid file of that format."},
}


@contextlib.contextmanager
def receive_upload(upload: UploadFile, folder: Path, limit: int) -> Iterator[Staged]:
    """The upload copied into ``folder`` under a temporary name; removed unless moved away."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".upload.")
    tmp = Path(name)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            while chunk := upload.file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLargeError(
                        "upload-too-large", f"the file is larger than the {limit} bytes accepted"
                    )
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise InvalidRequestError.field("file", "the file is empty")
        yield Staged(tmp, size, digest.hexdigest())
    finally:
        tmp.unlink(missing_ok=True)


def _out(upload: Upload) -> UploadOut:
    details = upload.details or {}
    if upload.kind == "dataset":
        fragment: dict[str, Any] = {"data": {"kind": "npz", "path": upload.path}}
    elif upload.format in PROGRAM_FORMATS:
        fragment = {"teacher": {"model": {"kind": upload.format, "path": upload.path}}}
    else:
        fragment = {"teacher": {"model": details.get("architecture"), "checkpoint": upload.path}}
    return UploadOut(
        id=upload.id,
        kind=upload.kind,
        format=upload.format,
        filename=upload.filename,
        path=upload.path,
        size=upload.size,
        sha256=upload.sha256,
        details=upload.details,
        summary=upload.details if upload.kind == "dataset" else None,
        spec_fragment=fragment,
        created_at=upload.created_at,
    )


def _architecture_of(text: str | None, fmt: str) -> dict[str, Any] | None:
    if fmt in PROGRAM_FORMATS:
        if text:
            raise InvalidRequestError.field(
                "architecture", f"a {fmt} file carries its own architecture: leave it out"
            )
        return None
    if not text:
        raise InvalidRequestError.field(
            "architecture", "safetensors weights need the registry architecture they fit"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequestError.field("architecture", f"malformed JSON: {e}") from None
    spec = validate_with(_architecture, data, what="architecture", field="architecture")
    return dict(spec.model_dump(mode="json"))


def _guess_format(path: Path, filename: str) -> str:
    if looks_like_zip(path):
        return "pt2" if is_pt2(path) else "torchscript"
    # ONNX (protobuf) has no magic number to sniff: its name says it (onnx loads only then)
    return "onnx" if filename.lower().endswith(".onnx") else "safetensors"


def _check_model(path: Path, fmt: str | None, filename: str) -> tuple[str, dict[str, Any]]:
    """(format, details); the format is guessed from the content (and name) when not given."""
    fmt = fmt or _guess_format(path, filename)
    checks = {
        "torchscript": check_torchscript,
        "safetensors": check_safetensors,
        "onnx": check_onnx,
        "pt2": check_export_program,
    }
    return fmt, checks[fmt](path)


@router.post(
    "/v1/models", status_code=201, response_model=UploadOut, summary="Upload a teacher", responses=_PROBLEMS
)
def upload_model(
    file: Annotated[
        UploadFile,
        File(description="A TorchScript archive, an ONNX model, a torch.export .pt2 or safetensors."),
    ],
    session: SessionDep,
    settings: SettingsDep,
    caller: WriterDep,
    response: Response,
    format_: Annotated[
        Literal["torchscript", "safetensors", "onnx", "pt2"] | None,
        Form(alias="format", description="Default: guessed from the content (ONNX: from a .onnx name)."),
    ] = None,
    architecture: Annotated[
        str | None, Form(description='JSON model spec (e.g. {"kind": "cnn"}); required for safetensors.')
    ] = None,
) -> UploadOut:
    """A teacher for `teacher.model: {kind: torchscript|onnx|pt2, path}` or, for safetensors
    weights, `teacher.model: <architecture>` with `teacher.checkpoint: path`. Pickles are refused,
    and so are programs calling an operator outside the allowlist of pure tensor operators."""
    folder = uploads.folder(settings.data_path, "model")
    with receive_upload(file, folder, settings.max_upload_bytes) as staged:
        fmt, details = _check_model(staged.tmp, format_, file.filename or "")
        arch = _architecture_of(architecture, fmt)
        if arch is not None:
            details["architecture"] = arch
        upload = uploads.record(
            session, caller, settings.data_path, staged,
            kind="model", fmt=fmt, filename=file.filename, details=details,
        )  # fmt: skip
    response.headers["Location"] = f"/v1/models/{upload.id}"
    return _out(upload)


@router.post(
    "/v1/datasets", status_code=201, response_model=UploadOut, summary="Upload a dataset", responses=_PROBLEMS
)
def upload_dataset(
    file: Annotated[UploadFile, File(description="An .npz archive: x_train, y_train, x_test, y_test.")],
    session: SessionDep,
    settings: SettingsDep,
    caller: WriterDep,
    response: Response,
) -> UploadOut:
    """A dataset for `data: {kind: npz, path}`: arrays `x_train`, `y_train`, `x_test`, `y_test`
    (optionally `x_val`, `y_val`); inputs `(N, L)`, `(N, H, W)` or `(N, C, H, W)`, integer labels."""
    with receive_upload(
        file, uploads.folder(settings.data_path, "dataset"), settings.max_upload_bytes
    ) as staged:
        label = file.filename or "the archive"
        summary = check_dataset(staged.tmp, label, settings.max_unpacked_bytes)
        upload = uploads.record(
            session, caller, settings.data_path, staged,
            kind="dataset", fmt="npz", filename=file.filename, details=summary,
        )  # fmt: skip
    response.headers["Location"] = f"/v1/datasets/{upload.id}"
    return _out(upload)


@read_router.get("/v1/models", response_model=UploadList, summary="Your team's uploaded teachers")
def list_models(session: SessionDep, caller: CallerDep) -> UploadList:
    return UploadList(items=[_out(u) for u in uploads.list_visible(session, caller, "model")])


@read_router.get("/v1/models/{upload_id}", response_model=UploadOut, summary="An uploaded teacher")
def get_model(upload_id: str, session: SessionDep, caller: CallerDep) -> UploadOut:
    return _out(uploads.get_visible(session, caller, "model", upload_id))


@read_router.get("/v1/datasets", response_model=UploadList, summary="Your team's uploaded datasets")
def list_datasets(session: SessionDep, caller: CallerDep) -> UploadList:
    return UploadList(items=[_out(u) for u in uploads.list_visible(session, caller, "dataset")])


@read_router.get("/v1/datasets/{upload_id}", response_model=UploadOut, summary="An uploaded dataset")
def get_dataset(upload_id: str, session: SessionDep, caller: CallerDep) -> UploadOut:
    return _out(uploads.get_visible(session, caller, "dataset", upload_id))
