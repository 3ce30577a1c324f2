"""Deployment files: the compose file validates, and the API image's pins match the project's."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if match := re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[a-z0-9,]+\])?==([^\s;]+)", line):
            out[match[1].lower().replace("_", "-")] = match[3]
    return out


def test_api_requirements_match_the_project_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pins(project["dependencies"] + project["optional-dependencies"]["s3"])
    api = pins((ROOT / "requirements" / "api.txt").read_text().splitlines())
    assert api, "requirements/api.txt lists no pins"
    assert {name: declared.get(name) for name in api} == api
    assert "torch" not in api and "torchvision" not in api


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_compose_file_is_valid() -> None:
    subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], check=True)


def test_compose_has_the_services_and_each_worker_its_gpus() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "flower"} <= set(services)
    workers = [name for name in services if name.startswith("worker")]
    assert workers
    for name in workers:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        command = services[name]["command"]
        gpus = command[command.index("--gpus") + 1].split(",")  # the slots the worker host offers
        assert devices == [{"driver": "nvidia", "device_ids": gpus, "capabilities": ["gpu"]}]
    for name in ("postgres", "redis", "api"):
        assert "healthcheck" in services[name]
    assert {"pgdata", "artifacts", "data", "work"} <= set(compose["volumes"])


def test_dockerfile_builds_both_images() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\S* AS api$", text, re.M)
    assert re.search(r"^FROM nvidia/cuda:\S+ AS worker$", text, re.M)
