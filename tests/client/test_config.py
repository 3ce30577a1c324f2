"""Where the client finds its server and token, and the private file `distill login` writes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from client import DEFAULT_URL, config_path, forget_login, resolve, save_login


def test_the_config_file_lives_under_xdg_config_home_unless_named(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "distillery" / "client.json"
    named = tmp_path / "elsewhere.json"
    env = {"XDG_CONFIG_HOME": str(tmp_path), "DISTILLERY_CLIENT_CONFIG": str(named)}
    assert config_path(env) == named
    assert config_path({}) == Path.home() / ".config" / "distillery" / "client.json"


def test_nothing_configured_means_the_local_default_and_no_token(tmp_path: Path) -> None:
    config = resolve(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert (config.url, config.token, config.url_from, config.token_from) == (
        DEFAULT_URL,
        None,
        "default",
        None,
    )


def test_options_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    env = {"DISTILLERY_CLIENT_CONFIG": str(tmp_path / "c.json")}
    save_login("http://saved:8000/", "t-file", tmp_path / "c.json")

    from_file = resolve(env=env)
    assert (from_file.url, from_file.token) == ("http://saved:8000", "t-file")
    assert from_file.url_from == from_file.token_from == "config file"

    env |= {"DISTILLERY_URL": "http://saved:8000", "DISTILLERY_TOKEN": "t-env"}
    from_env = resolve(env=env)
    assert (from_env.token, from_env.token_from, from_env.url_from) == ("t-env", "environment", "environment")

    from_options = resolve("other:9000", "t-opt", env=env)
    assert (from_options.url, from_options.token) == ("http://other:9000", "t-opt")
    assert from_options.url_from == from_options.token_from == "option"


def test_a_saved_token_is_only_sent_to_the_server_it_was_saved_for(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    env = {"DISTILLERY_CLIENT_CONFIG": str(path)}
    save_login("http://a:8000", "token-a", path)
    save_login("http://b:8000", "token-b", path)  # the last login is the default server
    assert resolve(env=env).token == "token-b"
    assert resolve("http://a:8000/", env=env).token == "token-a"
    assert resolve("http://elsewhere:8000", env=env).token is None

    assert forget_login("http://b:8000", path) and not forget_login("http://b:8000", path)
    assert resolve(env=env).token is None and resolve("http://a:8000", env=env).token == "token-a"


def test_the_file_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "client.json"
    save_login("http://a:8000", "secret", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": "http://a:8000", "tokens": {"http://a:8000": "secret"}}
    assert [p.name for p in path.parent.iterdir()] == ["client.json"]  # no temporary file left


def test_a_damaged_file_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{not json")
    config = resolve(env={"DISTILLERY_CLIENT_CONFIG": str(path)})
    assert (config.url, config.token) == (DEFAULT_URL, None)
