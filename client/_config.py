"""Where the client finds its server and token.

Each value is taken from the first place that has it: an explicit argument (the CLI's
``--url`` / ``--token``), the environment (``DISTILLERY_URL``, ``DISTILLERY_TOKEN``), then the
config file that ``distill login`` writes: ``$DISTILLERY_CLIENT_CONFIG``, else
``$XDG_CONFIG_HOME/distillery/client.json``, else ``~/.config/distillery/client.json``.

The file keeps one token per server URL, so a token saved for one server is never sent to
another one named with ``--url``; its ``url`` is the server used when none is named.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("DISTILLERY_CLIENT_CONFIG"):
        return Path(env["DISTILLERY_CLIENT_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "distillery" / "client.json"


@dataclass(frozen=True)
class Config:
    url: str
    token: str | None
    url_from: str  # "option", "environment", "config file" or "default": said in messages
    token_from: str | None
    path: Path


def read_file(path: Path) -> dict[str, Any]:
    """The config file's content; an absent or unreadable file is an empty config."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tokens(saved: dict[str, Any]) -> dict[str, str]:
    tokens = saved.get("tokens")
    return {str(k): v for k, v in tokens.items() if isinstance(v, str)} if isinstance(tokens, dict) else {}


def resolve(
    url: str | None = None, token: str | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """The server and token to use, each from the first source that has one."""
    env = os.environ if env is None else env
    path = config_path(env)
    saved = read_file(path)
    if url:
        chosen, url_from = url, "option"
    elif env.get("DISTILLERY_URL"):
        chosen, url_from = env["DISTILLERY_URL"], "environment"
    elif isinstance(saved.get("url"), str):
        chosen, url_from = saved["url"], "config file"
    else:
        chosen, url_from = DEFAULT_URL, "default"
    chosen = normalize_url(chosen)
    tokens = _tokens(saved)
    token_from: str | None
    if token:
        token_from = "option"
    elif env.get("DISTILLERY_TOKEN"):
        token, token_from = env["DISTILLERY_TOKEN"], "environment"
    elif chosen in tokens:
        token, token_from = tokens[chosen], "config file"
    else:
        token, token_from = None, None
    return Config(url=chosen, token=token, url_from=url_from, token_from=token_from, path=path)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON readable by its owner only, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".client.", suffix=".json")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_login(url: str, token: str, path: Path) -> None:
    """Remember ``token`` for ``url`` and make ``url`` the default server."""
    data = read_file(path)
    url = normalize_url(url)
    tokens = _tokens(data)
    _write_private(path, {**data, "url": url, "tokens": {**tokens, url: token}})


def forget_login(url: str, path: Path) -> bool:
    """Drop the token saved for ``url``; False if there was none."""
    data = read_file(path)
    tokens = _tokens(data)
    url = normalize_url(url)
    if url not in tokens:
        return False
    _write_private(path, {**data, "tokens": {k: v for k, v in tokens.items() if k != url}})
    return True
