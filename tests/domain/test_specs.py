"""The checks a valid spec must also pass: its team's uploads only, and a cost within the limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidDocumentError
from core.spec import JobSpec
from domain.specs import check_spec
from store.db import session_scope
from store.identity import Caller
from store.models import Upload
from store.settings import Settings

ANA = Caller(user="ana", team="vision", role="member", token_id="t1")
BO = Caller(user="bo", team="audio", role="member", token_id="t2")
ROOT = Caller(user="root", team="ops", role="admin", token_id="t0")
ARCHIVE = "uploads/datasets/d.npz"
TINY_MODEL = {"model": {"kind": "mlp", "hidden": [2]}}
# 30 + 9 rows of 9 float32 inputs and an int64 label: 39 * 44 bytes
SUMMARY = {"input_shape": [9], "num_classes": 2, "train_size": 30, "test_size": 9, "dtype": "float32"}


def spec(path: str = ARCHIVE, **changes: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"data": {"kind": "npz", "path": path}, "teacher": TINY_MODEL, "student": TINY_MODEL, **changes}
    )


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    with session_scope(db_url) as session:
        session.add(
            Upload(
                kind="dataset", format="npz", filename="d.npz", path=ARCHIVE, size=2000,
                sha256="0" * 64, details=SUMMARY, owner="ana", team="vision",
            )
        )  # fmt: skip
    return Settings(home=tmp_path, database_url=db_url)


def refusal(settings: Settings, caller: Caller, job: JobSpec) -> dict[str, str]:
    """The fields the check refuses, with their messages."""
    with session_scope(settings.db_url) as session, pytest.raises(InvalidDocumentError) as refused:
        check_spec(session, caller, job, settings)
    assert refused.value.type == "invalid-spec" and refused.value.status == 422
    return {issue.field: issue.message for issue in refused.value.errors}


def test_a_spec_names_its_own_teams_uploads_only(settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        check_spec(session, ANA, spec(), settings)
        check_spec(session, ANA, spec("uploads/datasets/./d.npz"), settings)  # the same file
        check_spec(session, ROOT, spec(), settings)  # admins see every team's
    # another team's upload is as absent as a missing one
    assert refusal(settings, BO, spec()) == {"data.path": f"no upload {ARCHIVE!r} (upload it first)"}
    missing = "uploads/datasets/gone.npz"
    assert refusal(settings, ANA, spec(missing)) == {"data.path": f"no upload {missing!r} (upload it first)"}


def test_an_estimate_over_the_limits_names_each_field(settings: Settings) -> None:
    big = {"model": {"kind": "mlp", "hidden": [100000, 100000]}}
    errors = refusal(settings, ANA, spec(student=big))
    assert list(errors) == ["student.model.hidden"]
    assert "(DISTILLERY_MAX_PARAMS)" in errors["student.model.hidden"]


def test_an_uploaded_archive_lends_the_estimate_its_shape(settings: Settings) -> None:
    strict = settings.model_copy(update={"max_dataset_bytes": 1000})
    errors = refusal(strict, ANA, spec())
    assert list(errors) == ["data"] and "about 1716 bytes of data" in errors["data"]
