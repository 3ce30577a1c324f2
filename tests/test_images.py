"""The Docker images start: each image's files and dependencies, rebuilt from the Dockerfile into a
fresh virtual environment on this machine (no Docker engine here), run the image's own commands.

The Dockerfile is read with ``dockerfile-parse``; for each stage, what it copies lands in a
directory standing for its ``WORKDIR``, and its ``pip`` commands run with a fresh venv's pip, the
image's absolute paths (``/wheels``, ``/app``, ``/opt/venv``, ...) mapped to temporary ones. Other
commands (``apt-get``, ``useradd``) are the base image's business and are skipped. The image's
commands then run from outside the checkout with only the stage's ``ENV`` (paths mapped), so
nothing is imported from the source tree: what the image lacks, they lack.

About four minutes on two cores, most of it installing torch into the worker's venv.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from dockerfile_parse import DockerfileParser

from tests.service import free_port

ROOT = Path(__file__).resolve().parents[1]
PYTHON = shutil.which("python3.11") or sys.executable
INSTALL_TIMEOUT_S = 900
ADMIN_TOKEN = "image-test-admin-token-0123456789"


@dataclass
class Stage:
    name: str
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[str | None, str, str]] = field(default_factory=list)  # (from stage, src, dest)
    runs: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def stages(dockerfile: Path) -> dict[str, Stage]:
    """Each ``FROM ... AS name`` stage's workdir, environment, copies, runs and command, in order."""
    parser = DockerfileParser(path=str(dockerfile))
    found: dict[str, Stage] = {}
    stage: Stage | None = None
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            name = value.split()[-1]
            stage = found.setdefault(name, Stage(name))
            continue
        assert stage is not None, f"{kind} before FROM"
        if kind == "WORKDIR":
            stage.workdir = value
        elif kind == "ENV":
            for pair in shlex.split(value):
                key, _, val = pair.partition("=")
                stage.env[key] = val
        elif kind == "COPY":
            words = value.split()
            source = next((w.removeprefix("--from=") for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            stage.copies += [(source, src, paths[-1]) for src in paths[:-1]]
        elif kind == "RUN":
            stage.runs.append(value)
        elif kind == "CMD":
            stage.cmd = json.loads(value) if value.startswith("[") else ["sh", "-c", value]
    return found


def ignored(patterns: list[str]) -> object:
    """A ``copytree`` ignore function for ``.dockerignore`` patterns, read as Docker reads them: a
    pattern names a path from the context's root, and ``**/`` matches at any depth."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(ROOT)
        out = set()
        for name in names:
            path = (rel / name).as_posix()
            for pattern in patterns:
                anywhere = pattern.startswith("**/") and fnmatch.fnmatch(name, pattern.removeprefix("**/"))
                if anywhere or fnmatch.fnmatch(path, pattern):
                    out.add(name)
        return out

    return ignore


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


class Image:
    """One stage rebuilt under ``base``: its venv, its paths, its environment."""

    def __init__(self, stage: Stage, base: Path, paths: dict[str, Path]) -> None:
        self.stage, self.base = stage, base
        self.venv = base / "venv"
        self.paths = {**paths, "/opt/venv": self.venv, stage.workdir: base / "workdir"}
        made = [self.paths[stage.workdir]]
        for value in stage.env.values():  # DISTILLERY_HOME and the like: made by the image's RUN
            for word in re.split(r"[:\s]", value):
                if word.startswith("/") and self.mapped(word) == word:
                    self.paths[word] = base / "fs" / word.strip("/")
                    made.append(self.paths[word])
        self.home = base / "home"
        for path in (*made, self.home):
            path.mkdir(parents=True, exist_ok=True)
        subprocess.run([PYTHON, "-m", "venv", str(self.venv)], check=True)

    def mapped(self, text: str) -> str:
        """``text`` with every image path replaced by its stand-in, longest first."""
        for image_path in sorted(self.paths, key=len, reverse=True):
            if image_path != "/":
                text = re.sub(
                    rf"(?<![\w/]){re.escape(image_path)}(?=/|\b|$)", str(self.paths[image_path]), text
                )
        return text

    def build(self, context: Path, others: dict[str, Image]) -> None:
        workdir = self.paths[self.stage.workdir]
        for source, src, dest in self.stage.copies:
            origin = others[source].paths if source else None
            src_path = Path(self.mapped(src)) if origin is not None else context / src
            dest_path = Path(self.mapped(dest)) if dest.startswith("/") else workdir / dest
            if src == "." and dest in (".", "./"):
                dest_path = workdir
            if src_path.resolve() == dest_path.resolve():
                continue  # a stage's output already where the next stage reads it
            if src_path.is_dir():
                shutil.copytree(src_path, dest_path, dirs_exist_ok=True)
            else:
                dest_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src_path, dest_path)
        for run in self.stage.runs:
            for command in re.split(r"\s*&&\s*", run.replace("\\\n", " ")):
                if command.split()[0] in ("pip", "pip3"):
                    self.install(command, workdir)

    def install(self, command: str, cwd: Path) -> None:
        # the machine's pip configuration (its package index) applies, as the build's would
        env = {**os.environ, "PATH": f"{self.venv / 'bin'}:{os.environ['PATH']}", "PIP_NO_CACHE_DIR": "1"}
        env.pop("PYTHONPATH", None)
        done = subprocess.run(
            ["bash", "-c", self.mapped(command)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    def environment(self) -> dict[str, str]:
        """Only what the image sets, plus a PATH to its venv and a HOME: nothing of this checkout."""
        env = {"PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8"}
        for key, value in self.stage.env.items():
            env[key] = self.mapped(value).replace("$PATH", env["PATH"])
        return env

    def run(self, args: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=self.paths[self.stage.workdir],
            env={**self.environment(), **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def rebuild(targets: list[str], base: Path) -> dict[str, Image]:
    """The named stages and the stages they copy from, rebuilt under ``base``."""
    found = stages(ROOT / "Dockerfile")
    context = base / "context"
    shutil.copytree(ROOT, context, ignore=ignored(dockerignore()))  # type: ignore[arg-type]
    needed = [s for s in found if s in targets or any(c[0] == s for t in targets for c in found[t].copies)]
    # the absolute paths stages hand each other (/wheels): one stand-in, shared
    paths = {
        image_path: base / "fs" / image_path.strip("/")
        for name in needed
        for _, src, dest in found[name].copies
        for image_path in (src, dest)
        if image_path.startswith("/")
    }
    images: dict[str, Image] = {}
    for name in needed:  # in the Dockerfile's order: a stage copies from earlier ones
        images[name] = Image(found[name], base / name, paths)
        images[name].build(context, images)
    return images


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    return rebuild(["api", "worker"], tmp_path_factory.mktemp("images"))


@pytest.fixture
def api_server(built: dict[str, Image]) -> Iterator[str]:
    image = built["api"]
    assert image.stage.cmd[:2] == ["distill", "api"], image.stage.cmd
    port = free_port()
    args = [w.replace("0.0.0.0", "127.0.0.1").replace("8000", str(port)) for w in image.stage.cmd]
    log = (image.base / "api.log").open("w")
    env = {**image.environment(), "DISTILLERY_ADMIN_TOKEN": ADMIN_TOKEN}  # as a deployment sets it
    server = subprocess.Popen(args, cwd=image.paths[image.stage.workdir], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_dockerfile_is_read_as_the_images_are_built() -> None:
    found = stages(ROOT / "Dockerfile")
    assert list(found) == ["wheel", "api", "worker"]
    assert found["api"].workdir == "/app" and found["api"].env["DISTILLERY_EXAMPLES_DIR"] == "/app/examples"
    assert ("wheel", "/wheels", "/wheels") in found["api"].copies
    assert found["worker"].cmd == ["distill", "worker"]
    assert any("requirements/torch.txt" in run for run in found["worker"].runs)


def test_the_api_image_serves_and_cannot_import_torch(built: dict[str, Image], api_server: str) -> None:
    image = built["api"]
    log = (image.base / "api.log").read_text()
    ready = httpx.get(f"{api_server}/readyz", timeout=5)
    assert ready.status_code == 200, log
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    # the dashboard's files ship in the wheel, the deepest ones included
    for path in (
        "/",
        "/ui/js/jobs/page.js",
        "/ui/vendor/yaml/compose/composer.js",
        "/ui/vendor/uPlot.iife.min.js",
    ):
        assert httpx.get(f"{api_server}{path}", timeout=5).status_code == 200, path
    # the examples the image copies are where its environment says
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    examples = httpx.get(f"{api_server}/v1/spec/examples", timeout=5, headers=auth)
    assert examples.status_code == 200, examples.text
    assert "mnist1d" in examples.text
    no_torch = image.run(["python", "-c", "import torch"])
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    # what it runs is the installed wheel, not this checkout
    where = image.run(["python", "-c", "import api, cli, client, domain; print(api.__file__)"])
    assert where.returncode == 0, where.stderr
    assert str(image.venv) in where.stdout and str(ROOT) not in where.stdout


def test_the_api_image_migrates_the_database(built: dict[str, Image]) -> None:
    done = built["api"].run(["distill", "migrate"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_worker_image_commands_run(built: dict[str, Image]) -> None:
    image = built["worker"]
    for command in (image.stage.cmd, ["distill", "migrate"]):
        done = image.run([*command, "--help"])
        assert done.returncode == 0 and "Usage" in done.stdout, done.stdout + done.stderr
    # what a task imports when it runs: the engine, torch, the confinement, the S3 store
    imports = "import worker.tasks, worker.engine_process, core.runner, torchvision, boto3, landlockpy"
    done = image.run(["python", "-c", imports])
    assert done.returncode == 0, done.stderr
