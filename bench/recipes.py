"""The default distillation recipe against the labels-only baseline, across datasets and budgets.

Each dataset has a teacher/student pair (a CNN teacher, an MLP student) and two budgets (a short
and a long number of distillation epochs). Per dataset and budget one job runs with the recipe
under test: the spec's ``distill`` defaults (losses, transfer set, optimizer, schedule, batch
size), only ``epochs`` set to the budget, merged with the ``distill`` section of ``--recipe``
when given, so candidate recipes can be compared. The baseline trains with the same budget.

Datasets (choose with ``--datasets``):

- ``mnist1d``: the package's generator (4000 train, 10% of it for validation, 1000 test);
  cnn1d(64) -> mlp(100, 100).
- ``digits``: scikit-learn's 8x8 digits (15% of the training split for validation, 360 test);
  cnn(32, 64) -> mlp(64).
- ``synthetic``: generated 1x16x16 class templates at noise 0.7 (3000 train, 1000 test);
  cnn(16, 32) -> mlp(100).
- ``textures``: real photographs, greyscale 24x24 patches of ten of the pictures scikit-image
  ships (its ``skimage/data`` folder; nothing is downloaded), one picture per class. Each picture is
  resized to a short side of 192 pixels and cut into a 4x4 grid of blocks: 10 blocks give the
  training patches, 3 the validation and 3 the test patches, and a patch never crosses a block,
  so no pixel is shared between splits. 200/50/100 patches per class. cnn(32, 64) -> mlp(100, 100).
  Written as an ``imagefolder`` tree of PNGs into ``--data-root`` (``runs/bench-data/`` by
  default) when absent.

Teachers and baselines do not depend on the recipe: each finished stage is kept in
``runs/bench-recipes/stages/<key>/`` under its ``core.stagekeys`` key and copied into the next
job that needs it, which then skips it (a teacher is trained once per dataset, a baseline once per
dataset and budget). ``--fresh`` ignores the kept stages.

The table: test top-1 of the teacher, the baseline and the student; the gain with its standard
error (the report's binomial one); the student's and the baseline's best validation top-1 (what a
choice between recipes may look at; the test split is for reporting); the job's seconds (reused
stages cost nothing); and whether the student is below its baseline beyond noise (gain < -2 SE).

    OMP_NUM_THREADS=1 .venv/bin/python bench/recipes.py [--recipe FILE.yaml] [--datasets a,b] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from core.runner import run_job
from core.spec import parse_spec
from core.stagekeys import shared_stages

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "bench-recipes"
DATA_ROOT = ROOT / "runs" / "bench-data"

# ---------------------------------------------------------------- the real-image patches

TEXTURES = "textures"
PICTURES = (
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "text.png",
)
SHORT_SIDE = 192
PATCH = 24
# The 4x4 grid of blocks of each picture, row by row: t(rain), v(al), s (test).
GRID = ("ttvt", "tstt", "vtts", "ttsv")
PER_CLASS = {"train": 200, "val": 50, "test": 100}
SPLIT_OF = {"t": "train", "v": "val", "s": "test"}


def _blocks(width: int, height: int) -> dict[str, list[tuple[int, int, int, int]]]:
    """(left, top, right, bottom) of each block, by split."""
    out: dict[str, list[tuple[int, int, int, int]]] = {s: [] for s in PER_CLASS}
    for r, row in enumerate(GRID):
        for c, letter in enumerate(row):
            box = (c * width // 4, r * height // 4, (c + 1) * width // 4, (r + 1) * height // 4)
            out[SPLIT_OF[letter]].append(box)
    return out


def make_textures(data_root: Path) -> str:
    """Write the patch folder under ``data_root`` unless it is complete; its name there."""
    target = data_root / TEXTURES
    if (target / ".complete").exists():
        return TEXTURES
    tmp = data_root / f".{TEXTURES}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    source = files("skimage") / "data"
    for label, picture in enumerate(PICTURES):
        with (source / picture).open("rb") as f:
            image = Image.open(f).convert("L")
            image.load()
        scale = SHORT_SIDE / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(image)
        name = Path(picture).stem
        for split, boxes in _blocks(image.width, image.height).items():
            rng = np.random.default_rng([label, list(PER_CLASS).index(split)])
            folder = tmp / split / name
            folder.mkdir(parents=True)
            for i in range(PER_CLASS[split]):
                left, top, right, bottom = boxes[i % len(boxes)]
                x = int(rng.integers(left, right - PATCH + 1))
                y = int(rng.integers(top, bottom - PATCH + 1))
                Image.fromarray(pixels[y : y + PATCH, x : x + PATCH]).save(folder / f"{i:04d}.png")
    (tmp / ".complete").write_text("")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return TEXTURES


# ---------------------------------------------------------------- the cases


def _teacher_train(epochs: int, lr: float, shift: int, batch: int = 64) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "batch_size": batch,
        "optimizer": {"kind": "adam", "lr": lr},
        "schedule": {"kind": "cosine"},
        "augment": [{"kind": "shift", "max_shift": shift}],
    }


@dataclass(frozen=True)
class Case:
    data: dict[str, Any]
    teacher: dict[str, Any]
    teacher_train: dict[str, Any]
    student: dict[str, Any]
    budgets: tuple[int, int]  # distillation epochs: short, long
    quick_budgets: tuple[int, int] = (3, 8)


CASES = {
    "mnist1d": Case(
        {"kind": "mnist1d", "val_fraction": 0.1},
        {"kind": "cnn1d", "channels": 64},
        _teacher_train(150, 0.01, 3, batch=100),
        {"kind": "mlp", "hidden": [100, 100]},
        (60, 300),
    ),
    "digits": Case(
        {"kind": "digits", "val_fraction": 0.15},
        {"kind": "cnn", "channels": [32, 64], "hidden": 128},
        _teacher_train(40, 0.002, 1),
        {"kind": "mlp", "hidden": [64]},
        (20, 100),
    ),
    "synthetic": Case(
        {
            "kind": "synthetic",
            "channels": 1,
            "size": 16,
            "noise": 0.7,
            "train_size": 3000,
            "test_size": 1000,
            "val_fraction": 0.1,
        },
        {"kind": "cnn", "channels": [16, 32], "hidden": 64},
        _teacher_train(30, 0.002, 2),
        {"kind": "mlp", "hidden": [100]},
        (20, 100),
    ),
    TEXTURES: Case(
        {"kind": "imagefolder", "path": TEXTURES, "image_size": PATCH, "channels": 1},
        {"kind": "cnn", "channels": [32, 64], "hidden": 128},
        _teacher_train(30, 0.002, 2),
        {"kind": "mlp", "hidden": [100, 100]},
        (20, 100),
    ),
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` into ``base``, mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def job_spec(name: str, case: Case, epochs: int, recipe: dict[str, Any], quick: bool) -> dict[str, Any]:
    teacher_train = dict(case.teacher_train)
    if quick:
        teacher_train["epochs"] = max(2, teacher_train["epochs"] // 10)
    return {
        "name": f"recipes-{name}-e{epochs}",
        "seed": 0,
        "data": case.data,
        "teacher": {"model": case.teacher, "train": teacher_train},
        "student": {"model": case.student},
        "distill": _merge({"epochs": epochs}, recipe),
        "baseline": True,
        "export": ["safetensors"],
        "runtime": {"measure_speed": False},
    }


# ---------------------------------------------------------------- running, with kept stages


def _restore(out_dir: Path, keys: dict[str, str], kept: Path) -> list[str]:
    reused = []
    for stage, key in keys.items():
        src = kept / key
        if (src / "result.json").exists() and (src / "model.safetensors").exists():
            dst = out_dir / "stages" / stage
            dst.mkdir(parents=True, exist_ok=True)
            for f in ("model.safetensors", "result.json"):
                shutil.copyfile(src / f, dst / f)
            reused.append(stage)
    return reused


def _keep(out_dir: Path, keys: dict[str, str], kept: Path) -> None:
    for stage, key in keys.items():
        src, dst = out_dir / "stages" / stage, kept / key
        if (dst / "result.json").exists() or not (src / "result.json").exists():
            continue
        tmp = kept / f".{key}.{os.getpid()}.tmp"  # two benches at once may keep the same stage
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in ("model.safetensors", "result.json"):
            shutil.copyfile(src / f, tmp / f)
        try:
            tmp.rename(dst)
        except OSError:  # the other one kept it first
            shutil.rmtree(tmp, ignore_errors=True)


def _val(out_dir: Path, stage: str) -> float:
    return json.loads((out_dir / "stages" / stage / "result.json").read_text())["best_val_top1"]


def run_case(
    name: str, epochs: int, spec_dict: dict[str, Any], out_dir: Path, data_root: Path, fresh: bool
) -> dict[str, Any]:
    spec = parse_spec(spec_dict)
    keys, kept = shared_stages(spec), OUT / "stages"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    reused = [] if fresh else _restore(out_dir, keys, kept)
    t0 = time.monotonic()
    report = run_job(spec, out_dir, data_root=data_root, device="cpu")
    seconds = time.monotonic() - t0
    _keep(out_dir, keys, kept)
    assert report.baseline is not None and report.kd_gain is not None and report.kd_gain_stderr is not None
    gain, se = report.kd_gain, report.kd_gain_stderr
    choice = report.transfer  # with transfer.choose auto: the student kept, chosen on validation
    return {
        "dataset": name,
        "epochs": epochs,
        "teacher": report.teacher.test_top1,
        "teacher_val": _val(out_dir, "teacher"),
        "baseline": report.baseline.test_top1,
        "student": report.student.test_top1,
        "gain": gain,
        "se": se,
        "student_val": _val(out_dir, choice.stage if choice else "student"),
        "baseline_val": _val(out_dir, "baseline"),
        "seconds": seconds,
        "reused": reused,
        "below": gain < -2 * se,
        "chosen": choice.chosen if choice else "",
        "distill": spec.distill.model_dump(mode="json", exclude={"epochs"}),
        "test_size": report.dataset.test_size,
    }


# ---------------------------------------------------------------- the table


def _verdict(row: dict[str, Any]) -> str:
    if row["below"]:
        return "**below baseline**"
    return "above baseline" if row["gain"] > 2 * row["se"] else "within noise"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | epochs | teacher | baseline | student | gain ± SE | student val | baseline val "
        "| s | kept student | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['epochs']} | {r['teacher']:.3f} | {r['baseline']:.3f} | "
            f"{r['student']:.3f} | {r['gain']:+.3f} ± {r['se']:.3f} | {r['student_val']:.3f} | "
            f"{r['baseline_val']:.3f} | {r['seconds']:.0f} | {r['chosen'] or '-'} | {_verdict(r)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, help="YAML whose `distill` section overrides the defaults")
    parser.add_argument("--datasets", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="a few epochs each: a smoke run, not a measure")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--fresh", action="store_true", help="train teachers and baselines again")
    args = parser.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    recipe: dict[str, Any] = {}
    if args.recipe is not None:
        recipe = (yaml.safe_load(args.recipe.read_text()) or {}).get("distill") or {}
    text = json.dumps(recipe, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    tag = f"{args.recipe.stem if args.recipe else 'defaults'}-{digest}"
    if args.quick:
        tag += "-quick"
    if TEXTURES in names:
        make_textures(args.data_root)

    rows, t0 = [], time.monotonic()
    for name in names:
        case = CASES[name]
        for epochs in case.quick_budgets if args.quick else case.budgets:
            spec = job_spec(name, case, epochs, recipe, args.quick)
            row = run_case(name, epochs, spec, OUT / tag / f"{name}-e{epochs}", args.data_root, args.fresh)
            rows.append(row)
            print(
                f"{name} e{epochs}: student {row['student']:.3f} baseline {row['baseline']:.3f} "
                f"({row['gain']:+.3f} ± {row['se']:.3f}), {row['seconds']:.0f} s"
                + (f", reused {', '.join(row['reused'])}" if row["reused"] else ""),
                flush=True,
            )
    wall = time.monotonic() - t0
    print()
    print(f"recipe: distill defaults + {text if recipe else '(nothing)'}")
    if rows:  # the defaults move as the engine does: say what ran (epochs aside)
        print(f"distill section in effect: {json.dumps(rows[0]['distill'], separators=(',', ':'))}")
    print()
    print(table(rows))
    print()
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(r["dataset"], r)
    print(
        "teachers (test top-1 / val top-1): "
        + "; ".join(f"{n} {r['teacher']:.3f} / {r['teacher_val']:.3f}" for n, r in seen.items())
    )
    below = [f"{r['dataset']} e{r['epochs']}" for r in rows if r["below"]]
    verdict = "PASS" if not below else f"FAIL ({', '.join(below)})"
    print(f"student never below its baseline beyond noise (gain >= -2 SE): {verdict}")
    print(f"wall time: {wall:.0f} s")
    (OUT / tag).mkdir(parents=True, exist_ok=True)
    summary = {"recipe": recipe, "rows": rows, "wall_s": wall}
    (OUT / tag / "rows.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
