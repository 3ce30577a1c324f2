"""Sweeps (DESIGN.md §8, "Studies"): a search over a base spec's parameters whose trials are
ordinary jobs of one group, with the search and the early stopping of a kept library (Optuna).

A sweep is a row (``store.models.Sweep``) and an Optuna study in the project's database
(``store.sweeps.study_storage``). Its trials are jobs like any other: submitted through the same
checks and team quotas (``domain.jobs.new_trial_job``), scheduled with the same fair share,
retried, confined and stored the same way. ``Job.trial`` is the Optuna trial's number.

The driver (``advance``) runs in each dispatcher pass and right after a sweep is made, one sweep
at a time under the sweep's lock (``store.locks``), so two dispatchers never ask for the same
trial. A pass tells Optuna how each ended trial went (the student's best-epoch objective;
``pruned`` → PRUNED; failed or cancelled → FAIL), asks for new trials while fewer than
``max_trials`` were made and fewer than ``max_concurrent`` are live, and ends the sweep once every
trial ended. Teacher and baseline once: the first trial runs alone until its teacher and baseline
are kept for the team (``worker.stages``) or it ended, so every later trial with the same keys
reuses them instead of training them again.

Pruning happens in the worker: a trial job's sink reports the student's per-epoch objective to
its Optuna trial (``TrialPruning``) and stops the run when the pruner says so; the job ends
``pruned`` with the pruner's reason.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.orm import Session

from core.errors import ConflictError, DistilleryError, FieldIssue, InvalidDocumentError, NotFoundError
from core.spec import JobSpec
from core.stagekeys import shared_stages
from domain.jobs import cancel as cancel_job
from domain.jobs import new_trial_job, request_hash, submit
from domain.specs import check_spec
from store import stages as kept
from store.db import session_scope
from store.identity import Caller
from store.locks import hold
from store.models import TERMINAL, Job, JobStatus, Sweep, SweepStatus, utcnow
from store.quotas import admit_job
from store.settings import Settings
from store.sweeps import (
    bump,
    live_trials,
    running_sweeps,
    stage_metric,
    study_storage,
    sweep_keys,
    trial_counts,
    trials_of,
)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

MAX_TRIALS = 200
MAX_CONCURRENT = 50
METRICS = ("val/top1", "val/top5", "val/loss")  # what the trainer records per epoch


# ---------------------------------------------------------------- the request


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Part):
    """Values between ``low`` and ``high``; ``log``: sampled on a log scale; ``integer``: whole numbers."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


Value = StrictBool | StrictInt | float | str
Values = Annotated[list[Value], Field(min_length=1, max_length=100)]
SPACE_TAGS = ("values", "range")  # the tags of a parameter's space in validation errors' paths


def _space_tag(value: Any) -> str:
    return "values" if isinstance(value, list) else "range"


Space = Annotated[
    Annotated[Values, Tag("values")] | Annotated[Range, Tag("range")], Discriminator(_space_tag)
]


class Objective(_Part):
    """What a trial is judged by: a student metric of the validation split, at its best epoch."""

    metric: Literal["val/top1", "val/top5", "val/loss"] = "val/top1"
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: minimize for val/loss, else maximize."
    )

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize" if self.direction else self.metric != "val/loss"


def _kind_only(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


class EarlyStopping(_Part):
    """Pruning on the student's per-epoch objective. ``asha``: asynchronous successive halving,
    rungs at ``min_epochs``·η^k (default min_epochs: the student's epochs / η², at least 1): a trial
    goes on past a rung only in the top 1/η of the trials that reached it. ``median``: stopped when
    below the median of the completed trials at the same epoch, after ``warmup_epochs`` (default:
    a quarter of the epochs) and once ``startup_trials`` trials completed."""

    kind: Literal["asha", "median", "none"] = "none"
    min_epochs: int | None = Field(None, ge=1)
    reduction_factor: int = Field(3, ge=2, le=10)
    warmup_epochs: int | None = Field(None, ge=0)
    startup_trials: int = Field(2, ge=0, le=100)


class SweepRequest(_Part):
    """``POST /v1/sweeps``: the base spec, the parameters to vary (spec paths such as
    ``distill.losses.0.temperature``, each with a list of values or a range), the search method,
    the objective, the budget and the early stopping."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$", description="Letters, digits, . _ -")
    base: dict[str, Any] = Field(description="A job spec, as POST /v1/jobs takes it.")
    params: dict[str, Space] = Field(min_length=1, max_length=10)
    method: Literal["grid", "random", "tpe"] = "grid"
    objective: Objective = Objective()
    max_trials: int | None = Field(
        None, ge=1, le=MAX_TRIALS, description="Default for grid: the grid's size; required otherwise."
    )
    max_concurrent: int = Field(2, ge=1, le=MAX_CONCURRENT, description="Trials live at once.")
    early_stopping: Annotated[EarlyStopping, BeforeValidator(_kind_only)] = EarlyStopping()
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds the search (not the trials' training).")


class SweepFinishedError(ConflictError):
    """Cancelling a sweep that has ended."""

    type = "sweep-finished"


# ---------------------------------------------------------------- validation


_MISSING = object()


def _at(data: Any, path: str) -> Any:
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _with(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for path, value in values.items():
        _set(data, path, value)
    return data


def _first_problem(error: PydanticValidationError) -> str:
    item = error.errors(include_url=False)[0]
    where = ".".join(str(p) for p in item["loc"])
    return f"{where}: {item['msg']}" if where else item["msg"]


def check_request(request: SweepRequest, base: JobSpec) -> SweepRequest:
    """The request with its defaults decided (``max_trials``), or a 422 naming each bad field:
    a path the base spec does not have, a range on a non-number or in a grid, a value the spec
    refuses."""
    dumped = base.model_dump(mode="json")
    issues: list[FieldIssue] = []
    for path, space in request.params.items():
        field = f"params.{path}"
        current = _at(dumped, path)
        if current is _MISSING:
            issues.append(FieldIssue(field, "the base spec has no such field"))
            continue
        if isinstance(current, dict | list):
            issues.append(FieldIssue(field, "names an object or a list, not a value"))
            continue
        if isinstance(space, Range):
            if request.method == "grid":
                issues.append(
                    FieldIssue(field, "a grid sweep takes a list of values; ranges need random or tpe")
                )
                continue
            if isinstance(current, bool) or not isinstance(current, int | float):
                issues.append(FieldIssue(field, f"a range needs a number here, the spec has {current!r}"))
                continue
            ends = [int(space.low), int(space.high)] if space.integer else [space.low, space.high]
            candidates: list[tuple[str, Any]] = list(zip(("low", "high"), ends, strict=True))
        else:
            candidates = [(str(i), v) for i, v in enumerate(space)]
        for label, value in candidates:
            try:
                JobSpec.model_validate(_with(dumped, {path: value}))
            except PydanticValidationError as e:
                issues.append(FieldIssue(f"{field}.{label}", f"{value!r} is refused: {_first_problem(e)}"))
    if request.method != "grid" and request.max_trials is None:
        issues.append(FieldIssue("max_trials", "required for a random or tpe sweep"))
    if issues:
        raise InvalidDocumentError("sweep", issues)
    if request.method == "grid":
        size = math.prod(len(v) for v in request.params.values() if isinstance(v, list))
        return request.model_copy(update={"max_trials": min(request.max_trials or size, size)})
    return request


# ---------------------------------------------------------------- samplers and pruners


def _sampler(request: SweepRequest, made: int) -> optuna.samplers.BaseSampler:
    """The request's sampler for the trial numbered ``made``. Samplers are rebuilt at each pass
    (any dispatcher may run it): the grid's order is fixed by the seed alone (Optuna gives trial
    ``n`` grid point ``n`` of the seeded shuffle); random and TPE draw from a seed per trial, so
    a rebuilt sampler does not draw the same values again."""
    import optuna

    if request.method == "grid":
        grid = {path: list(v) for path, v in request.params.items() if isinstance(v, list)}
        return optuna.samplers.GridSampler(grid, seed=request.seed)
    seed = (request.seed * 1_000_003 + made) % 2**32
    if request.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(2, min(10, (request.max_trials or 10) // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def pruner_of(request: SweepRequest, epochs: int) -> optuna.pruners.BasePruner:
    """``epochs``: the base spec's student epochs (the resource ASHA's rungs count)."""
    import optuna

    es = request.early_stopping
    if es.kind == "asha":
        first = es.min_epochs or max(1, epochs // es.reduction_factor**2)
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first, reduction_factor=es.reduction_factor
        )
    if es.kind == "median":
        warmup = es.warmup_epochs if es.warmup_epochs is not None else epochs // 4
        return optuna.pruners.MedianPruner(n_startup_trials=es.startup_trials, n_warmup_steps=warmup)
    return optuna.pruners.NopPruner()


def _suggest(trial: optuna.Trial, path: str, space: list[Any] | Range) -> Any:
    if isinstance(space, list):
        return trial.suggest_categorical(path, space)
    if space.integer:
        return trial.suggest_int(path, int(space.low), int(space.high), log=space.log)
    return trial.suggest_float(path, space.low, space.high, log=space.log)


def _study(db_url: str, sweep: Sweep, sampler: Any = None, pruner: Any = None) -> optuna.Study:
    import optuna

    # telling a trial runs the sampler's after_trial: a GridSampler's would try to stop the study
    sampler = sampler or optuna.samplers.RandomSampler()
    return optuna.load_study(
        study_name=sweep.study, storage=study_storage(db_url), sampler=sampler, pruner=pruner
    )


# ---------------------------------------------------------------- create, cancel


def _owner(sweep: Sweep) -> Caller:
    """Trials are submitted as the sweep's owner (their uploads, their team's quotas)."""
    return Caller(user=sweep.owner, team=sweep.team or "", role="member", token_id="")


def create(
    session: Session,
    caller: Caller,
    request: SweepRequest,
    base: JobSpec,
    settings: Settings,
    *,
    wake: Callable[[], None] = lambda: None,
) -> Sweep:
    """Store the sweep, make its study, submit its first trial, commit, then ``wake`` the dispatcher."""
    import optuna

    try:  # teacher.from_job filled in, as POST /v1/jobs does
        base = check_spec(session, caller, base, settings)
    except InvalidDocumentError as e:  # the same checks as POST /v1/jobs, named under base
        raise InvalidDocumentError(
            "sweep", [FieldIssue(f"base.{i.field}", i.message) for i in e.errors]
        ) from None
    request = check_request(request, base).model_copy(update={"base": base.model_dump(mode="json")})
    admit_job(session, caller.team)  # a full queue is a 409 now, not a sweep that never starts
    sweep = Sweep(
        name=request.name,
        owner=caller.user,
        team=caller.team,
        request=request.model_dump(mode="json"),
        study="",
        status=SweepStatus.RUNNING,
        message="",
    )
    session.add(sweep)
    session.flush()
    sweep.study = f"sweep-{sweep.id}"
    direction: Literal["maximize", "minimize"] = "maximize" if request.objective.maximize else "minimize"
    optuna.create_study(study_name=sweep.study, storage=study_storage(settings.db_url), direction=direction)
    _advance(session, sweep, settings)
    session.commit()
    wake()
    return sweep


def cancel(session: Session, caller: Caller, sweep: Sweep) -> Sweep:
    """End a running sweep: no trial starts any more, and its live trials are cancelled."""
    hold(session, _lock(sweep.id))  # after a pass that is launching trials, not during it
    session.refresh(sweep)
    if sweep.status != SweepStatus.RUNNING:
        raise SweepFinishedError(f"sweep {sweep.id} is already {sweep.status}")
    for job_id in live_trials(session, sweep.id):
        job = session.get(Job, job_id)
        if job is None:
            continue
        with contextlib.suppress(ConflictError):  # it ended meanwhile
            cancel_job(session, caller, job)
    bump(
        session,
        sweep.id,
        status=SweepStatus.CANCELLED,
        finished_at=utcnow(),
        message=f"cancelled by {caller.user}",
    )
    session.flush()
    session.refresh(sweep)
    return sweep


class NoBestTrialError(ConflictError):
    """Repeating the best trial of a sweep that has none (no trial completed yet)."""

    type = "no-best-trial"


def repeat_best(session: Session, caller: Caller, sweep: Sweep, repeats: int, settings: Settings) -> Job:
    """A new job (not a trial): the sweep's best trial's spec with ``repeats`` seeds, so its gain
    gets a confidence interval; submitted like ``POST /v1/jobs`` (checks, quotas), committed."""
    if sweep.best_job_id is None or (best := session.get(Job, sweep.best_job_id)) is None:
        raise NoBestTrialError(f"sweep {sweep.id} has no completed trial to repeat yet")
    data = copy.deepcopy(best.spec)
    data["repeats"] = repeats
    data["name"] = f"{sweep.name}-best-x{repeats}"[:100]
    if not data.get("baseline", {}).get("enabled", True):
        data["baseline"] = {**data["baseline"], "enabled": True}  # the gains need it
    spec = JobSpec.model_validate(data)
    return submit(session, caller, spec, settings, body_hash=request_hash(data)).job


def page(session: Session, caller: Caller, after: tuple[datetime, str] | None, limit: int) -> Sequence[Sweep]:
    """The caller's team's sweeps (an admin's: every team's), newest first, after a cursor."""
    return sweep_keys(session, None if caller.is_admin else {caller.team}, after, limit)


def trial_counts_of(session: Session, sweep_ids: Collection[str]) -> dict[str, dict[str, int]]:
    """``{sweep id: {job status: count}}`` of their trials."""
    return trial_counts(session, sweep_ids)


def get_visible(session: Session, caller: Caller, sweep_id: str) -> Sweep:
    """The sweep, if ``caller`` may see it: another team's is a 404, like a job."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or not caller.sees(sweep.team):
        raise NotFoundError("sweep", sweep_id)
    return sweep


# ---------------------------------------------------------------- the driver


def _lock(sweep_id: str) -> str:
    return f"sweep:{sweep_id}"


def advance_all(settings: Settings) -> None:
    """One pass over every running sweep, each in a transaction of its own (the dispatcher's)."""
    with session_scope(settings.db_url) as session:
        ids = running_sweeps(session)
    for sweep_id in ids:
        try:
            advance(settings, sweep_id)
        except Exception:
            log.exception("sweep %s: pass failed; retried on the next one", sweep_id)


def advance(settings: Settings, sweep_id: str) -> None:
    with session_scope(settings.db_url) as session:
        hold(session, _lock(sweep_id))
        sweep = session.get(Sweep, sweep_id, populate_existing=True)
        if sweep is not None and sweep.status == SweepStatus.RUNNING:
            _advance(session, sweep, settings)


def _advance(session: Session, sweep: Sweep, settings: Settings) -> None:
    from optuna.trial import TrialState

    request = SweepRequest.model_validate(sweep.request)
    study = _study(settings.db_url, sweep)
    jobs = {job.trial: job for job in trials_of(session, sweep.id) if job.trial is not None}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        job = jobs.get(trial.number)
        if job is None:  # asked for by a pass whose commit never landed
            _fail(study, trial.number, "no job was made for it (its pass did not commit)")
        elif job.status in TERMINAL:
            _tell(session, study, trial.number, job, request)
    trials = study.get_trials(deepcopy=False)
    _record_best(session, sweep, study, jobs, request)
    made = len(trials)
    live = sum(job.status not in TERMINAL for job in jobs.values())
    waiting = ""
    while made < (request.max_trials or 0) and live < request.max_concurrent:
        if made and not _first_done(session, sweep, jobs):
            waiting = "the first trial trains the shared teacher and baseline; the others wait for them"
            break
        try:
            admit_job(session, sweep.team or "")
        except DistilleryError as e:
            waiting = f"waiting for room in the team's queue: {e}"
            break
        job = _launch(session, sweep, request, settings, made)
        made += 1
        if job is not None and job.trial is not None:
            jobs[job.trial] = job
            live += 1
    if made >= (request.max_trials or 0) and live == 0:
        _finish(session, sweep, study)
    elif waiting != sweep.message:
        bump(session, sweep.id, message=waiting)


def _first_done(session: Session, sweep: Sweep, jobs: dict[int, Job]) -> bool:
    """The first trial ended, or every stage it can share is kept for the team."""
    first = jobs.get(0)
    if first is None or first.status in TERMINAL:
        return True
    keys = shared_stages(JobSpec.model_validate(first.spec))
    return all(kept.find(session, sweep.team or "", key) is not None for key in keys.values())


def _launch(
    session: Session, sweep: Sweep, request: SweepRequest, settings: Settings, made: int
) -> Job | None:
    """Ask Optuna for a trial and submit its job; None if its spec is refused (the trial fails)."""
    study = _study(settings.db_url, sweep, sampler=_sampler(request, made))
    trial = study.ask()
    values = {path: _suggest(trial, path, space) for path, space in request.params.items()}
    data = _with(JobSpec.model_validate(request.base).model_dump(mode="json"), values)
    data["name"] = f"{sweep.name}-t{trial.number}"
    owner = _owner(sweep)
    try:
        with session.begin_nested():
            spec = JobSpec.model_validate(data)
            job = new_trial_job(session, owner, spec, settings)
            job.sweep_id, job.trial = sweep.id, trial.number
            session.flush()
    except PydanticValidationError as e:
        _fail(study, trial.number, f"its spec is refused: {_first_problem(e)}", trial)
        return None
    except DistilleryError as e:
        _fail(study, trial.number, f"its spec is refused: {e}", trial)
        return None
    return job


def _fail(study: optuna.Study, number: int, why: str, trial: optuna.Trial | None = None) -> None:
    from optuna.trial import TrialState

    if trial is not None:
        trial.set_user_attr("error", why)
    else:
        study._storage.set_trial_user_attr(
            study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number),
            "error",
            why,
        )
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def objective_of(session: Session, job: Job, request: SweepRequest) -> float | None:
    """The student's objective metric at its best epoch (the weights it keeps), or its best value;
    from the stage the reported student comes from (``student.plain`` when the engine chose the
    plain inputs over the transfer set)."""
    stage = ((job.report or {}).get("transfer") or {}).get("stage") or "student"
    values = stage_metric(session, job.id, stage, request.objective.metric)
    if not values:
        return None
    best_epoch = ((job.report or {}).get("student") or {}).get("best_epoch")
    if isinstance(best_epoch, int) and best_epoch in values:
        return values[best_epoch]
    return max(values.values()) if request.objective.maximize else min(values.values())


def _tell(session: Session, study: optuna.Study, number: int, job: Job, request: SweepRequest) -> None:
    from optuna.trial import TrialState

    if job.status == JobStatus.SUCCEEDED:
        value = objective_of(session, job, request)
        if value is None:
            _fail(study, number, f"job {job.id} recorded no {request.objective.metric}")
        else:
            study.tell(number, value, skip_if_finished=True)
    elif job.status == JobStatus.PRUNED:
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
    else:
        why = (job.error or {}).get("message") or str(job.status)
        _fail(study, number, f"job {job.id} {job.status}: {why}")


def _record_best(
    session: Session, sweep: Sweep, study: optuna.Study, jobs: dict[int, Job], request: SweepRequest
) -> None:
    best = best_trial(study)
    if best is None or best.value is None or (job := jobs.get(best.number)) is None:
        return
    if sweep.best_job_id != job.id or sweep.best_value != best.value:
        bump(session, sweep.id, best_job_id=job.id, best_value=best.value)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    pick = max if study.direction.name == "MAXIMIZE" else min
    return pick(done, key=lambda t: (t.value, -t.number))  # ties: the earlier trial


def _finish(session: Session, sweep: Sweep, study: optuna.Study) -> None:
    from optuna.trial import TrialState

    counts = {s: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] = counts.get(trial.state, 0) + 1
    completed = counts[TrialState.COMPLETE]
    summary = (
        f"{sum(counts.values())} trial(s): {completed} completed, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed"
    )
    status = SweepStatus.SUCCEEDED if completed else SweepStatus.FAILED
    bump(session, sweep.id, status=status, finished_at=utcnow(), message=summary)
    log.info("sweep %s %s: %s", sweep.id, status, summary)


# ---------------------------------------------------------------- the worker's side


@dataclass
class TrialPruning:
    """A trial job's link to its Optuna trial: each student epoch's objective is reported, and
    the pruner's verdict comes back as the reason to stop (None: go on)."""

    study: optuna.Study
    trial: optuna.Trial
    request: SweepRequest

    @classmethod
    def for_job(cls, db_url: str, job_id: str) -> TrialPruning | None:
        """None for a job that is no sweep's trial, or whose sweep does not prune."""
        import optuna

        with session_scope(db_url) as session:
            job = session.get(Job, job_id)
            if job is None or job.sweep_id is None or job.trial is None:
                return None
            sweep = session.get(Sweep, job.sweep_id)
            if sweep is None:
                return None
            request = SweepRequest.model_validate(sweep.request)
            if request.early_stopping.kind == "none":
                return None
            epochs = JobSpec.model_validate(request.base).distill.epochs
            study, number = sweep.study, job.trial
        loaded = optuna.load_study(
            study_name=study, storage=study_storage(db_url), pruner=pruner_of(request, epochs)
        )
        trial_id = loaded._storage.get_trial_id_from_study_id_trial_number(loaded._study_id, number)
        return cls(loaded, optuna.Trial(loaded, trial_id), request)

    def __call__(self, stage: str, epoch: int, values: dict[str, float]) -> str | None:
        metric = self.request.objective.metric
        value = values.get(metric)
        if stage != "student" or value is None or not math.isfinite(value):
            return None
        self.trial.report(value, epoch)
        if not self.trial.should_prune():
            return None
        return self._reason(epoch, value)

    def _reason(self, epoch: int, value: float) -> str:
        metric, es = self.request.objective.metric, self.request.early_stopping
        others = [
            t.intermediate_values[epoch]
            for t in self.study.get_trials(deepcopy=False)
            if t.number != self.trial.number and epoch in t.intermediate_values
        ]
        best = (max if self.request.objective.maximize else min)(others, default=None)
        if es.kind == "asha":
            rule = f"not in the top 1/{es.reduction_factor} of the {len(others) + 1} trials at this rung"
        else:
            ordered = sorted(others)
            median = ordered[len(ordered) // 2] if ordered else float("nan")
            rule = f"behind the median {median:.4f} of the other trials at this epoch"
        best_text = f"; best {best:.4f}" if best is not None else ""
        by = "ASHA" if es.kind == "asha" else "the median rule"
        return f"pruned by {by} at student epoch {epoch}: {metric} {value:.4f} {rule}{best_text}"


# ---------------------------------------------------------------- what the API shows


@dataclass(frozen=True)
class TrialView:
    number: int
    job_id: str | None
    params: dict[str, Any]
    status: str  # the job's status; "invalid" for a trial whose spec was refused (no job)
    objective: float | None
    pruned_at_epoch: int | None
    error: str | None


@dataclass(frozen=True)
class SweepView:
    trials: list[TrialView]
    best: TrialView | None
    importances: dict[str, float] | None
    importances_note: str | None


def describe(session: Session, settings: Settings, sweep: Sweep) -> SweepView:
    from optuna.trial import TrialState

    study = _study(settings.db_url, sweep)
    jobs = {job.trial: job for job in trials_of(session, sweep.id)}
    views = []
    for trial in study.get_trials(deepcopy=False):
        job = jobs.get(trial.number)
        status = str(job.status) if job is not None else "invalid"
        pruned_at = (
            max(trial.intermediate_values)
            if trial.state == TrialState.PRUNED and trial.intermediate_values
            else None
        )
        error = trial.user_attrs.get("error")
        if job is not None and job.status == JobStatus.PRUNED:
            error = (job.error or {}).get("message")
        views.append(
            TrialView(
                trial.number,
                job.id if job else None,
                dict(trial.params),
                status,
                trial.value,
                pruned_at,
                error,
            )
        )
    best = best_trial(study)
    importances, note = _importances(study)
    return SweepView(
        views, next((v for v in views if best and v.number == best.number), None), importances, note
    )


_IMPORTANCES: dict[tuple[str, tuple[tuple[int, float | None], ...]], tuple[dict[str, float], None]] = {}


def _importances(study: optuna.Study) -> tuple[dict[str, float] | None, str | None]:
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return None, f"needs 2 completed trials, has {len(done)}"
    varied = {name for name in done[0].params if len({repr(t.params.get(name)) for t in done}) > 1}
    if not varied:
        return None, "the completed trials share every parameter value"
    # fANOVA fits a forest: a poll of an unchanged sweep must not pay for it again. The key is
    # every completed trial's number and value, so a newly completed trial invalidates it.
    key = (study.study_name, tuple((t.number, t.value) for t in done))
    if (cached := _IMPORTANCES.get(key)) is not None:
        return cached
    try:
        found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except Exception as e:  # too few trials for the evaluator, a degenerate space
        return None, f"not computable yet: {e}"
    if len(_IMPORTANCES) >= 256:
        _IMPORTANCES.pop(next(iter(_IMPORTANCES)))
    _IMPORTANCES[key] = result = ({name: float(v) for name, v in found.items()}, None)
    return result


def grid_size(request: SweepRequest) -> int | None:
    if request.method != "grid":
        return None
    return math.prod(len(v) for v in request.params.values() if isinstance(v, list))
