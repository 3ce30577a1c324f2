"""Files in and out: checksum-verified downloads and multipart uploads, both streamed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from client._errors import ChecksumMismatch, Unreachable, error_for
from client._models import Artifact

CHUNK = 1 << 20


def target_path(artifact: Artifact, dest: Path) -> Path:
    """``dest`` itself, or the artifact's file name inside it when it is a directory.

    Only the name's last part is used: a server cannot make the client write outside ``dest``."""
    if dest.is_dir():
        return dest / (Path(artifact.filename).name or artifact.id)
    return dest


def download(
    send: Callable[..., httpx.Response], request: httpx.Request, artifact: Artifact, dest: Path, url: str
) -> Path:
    """Stream the artifact into a temporary file beside the target, check it, then rename it."""
    final = target_path(artifact, dest)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream(send, request, out, artifact, url)
        if digest != artifact.sha256.lower():
            raise ChecksumMismatch(
                f"{artifact.name}: the downloaded file's SHA-256 is {digest}, "
                f"not the {artifact.sha256} the server listed; it was not kept"
            )
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return final


def _stream(
    send: Callable[..., httpx.Response], request: httpx.Request, out: Any, artifact: Artifact, url: str
) -> str:
    digest = hashlib.sha256()
    response = send(request, stream=True)
    try:
        if response.status_code != 200:
            response.read()
            raise error_for(response)
        for chunk in response.iter_bytes(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    except httpx.TransportError as e:
        # the server cuts a file that fails its own check short, and so does a lost connection
        raise Unreachable(url, f"the download of {artifact.name} was cut short ({e})") from None
    finally:
        response.close()
    return digest.hexdigest()


def upload_file(
    request: Callable[..., httpx.Response], route: str, path: Path, form: dict[str, str]
) -> httpx.Response:
    """POST ``path`` as the multipart field ``file`` (httpx streams it from the disk)."""
    with path.open("rb") as f:
        files = {"file": (path.name, f, "application/octet-stream")}
        return request("POST", route, files=files, data=form)
