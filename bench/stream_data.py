"""Streaming datasets: peak memory against the budget, and throughput against the in-memory path.

1. Memory. Image folders of 64x64 RGB JPEGs (10 classes, a learnable bright square per class): a
   training split of several sizes, and the same ``val/`` and ``test/`` at every size, so the
   evaluation's batches (``runtime.eval_batch_size``) are alike and only the training split grows.
   Each runs as a whole distillation job (small teacher and student, one epoch each) in a
   subprocess with ``DISTILLERY_DATA_MEMORY_BYTES`` a quarter of its decoded size, so
   ``loader.mode: auto`` must stream. The job's process tree (the engine and its DataLoader
   workers) is sampled from /proc every ``--sample-ms``: the peak of the tree's summed PSS (RSS
   counts the copy-on-write pages a forked worker shares with the engine once per process; PSS
   shares them out), RSS alongside, and the peak within each phase of the job. The claim: the peak
   is a fixed overhead, the smallest set's (run twice: the spread is the noise), that does not
   grow with the dataset, hence within budget + that overhead. The largest set runs once more
   with ``loader.mode: memory``: what the same measurement shows when the data is held.
2. Throughput. A folder that fits both ways, the same job with ``loader.mode: memory`` and
   ``stream`` (default workers), alternating over rounds; the student stage's training samples/s
   in its last epoch (the engine's epoch metric) and the ratio stream/memory per round. The teacher
   is freshly initialized rather than trained (its forward pass costs the same). Target: stream
   keeps >= 0.8 of the in-memory rate.

The images are generated once into ``runs/bench-stream-data/`` (ignored by git) and reused. About
10 minutes on 2 CPUs; ``--quick`` about a minute (its sets are too small for the memory claim).

    .venv/bin/python bench/stream_data.py [--quick] [--sizes 2000,10000,20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "runs" / "bench-stream-data"
BUDGET_ENV = "DISTILLERY_DATA_MEMORY_BYTES"  # core.data.loading.BUDGET_ENV (not imported: no torch here)
CLASSES = 10
SIZE = 64  # pixels, square, RGB
MiB = 2**20


# ---------------------------------------------------------------- the image folders


def _image(label: int, index: int) -> Image.Image:
    """Noise with a bright square whose place (a 4x4 grid of cells) and tint tell the class."""
    rng = np.random.default_rng([label, index])
    pixels = rng.integers(0, 110, (SIZE, SIZE, 3), dtype=np.uint8)
    cell = SIZE // 4
    row, col = divmod((label * 7) % 16, 4)
    top = row * cell + int(rng.integers(-3, 4))
    left = col * cell + int(rng.integers(-3, 4))
    top, left = min(max(top, 0), SIZE - cell), min(max(left, 0), SIZE - cell)
    tint = np.array([200 + 5 * label, 255 - 12 * label, 140 + 10 * label], dtype=np.uint8)
    pixels[top : top + cell, left : left + cell] = tint
    return Image.fromarray(pixels)


def _pool(split: str, per_class: int) -> list[list[Path]]:
    """``per_class`` JPEGs of each class in the shared pool, generated where missing."""
    offset = {"train": 0, "test": 10**6, "val": 2 * 10**6}[split]  # a different image per split
    made = []
    for label in range(CLASSES):
        folder = CACHE / "pool" / split / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"{i:06d}.jpg" for i in range(per_class)]
        for i, path in enumerate(paths):
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                _image(label, offset + i).save(tmp, format="JPEG", quality=90)
                tmp.replace(path)
        made.append(paths)
    return made


def image_folder(n: int, held: int) -> str:
    """A folder of ``n`` training images and ``held`` each in ``val/`` and ``test/`` (hard links
    into the pool); its path relative to the cache, which is the jobs' data root."""
    name = f"n{n}-held{held}"
    for split, count in (("train", n), ("val", held), ("test", held)):
        for label, paths in enumerate(_pool(split, count // CLASSES)):
            folder = CACHE / name / split / f"c{label}"
            if folder.is_dir() and len(os.listdir(folder)) == len(paths):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for path in paths:
                try:
                    os.link(path, folder / path.name)
                except OSError:
                    shutil.copyfile(path, folder / path.name)
    return name


def decoded_bytes(n: int, held: int) -> int:
    """What ``choose_loader`` counts: the train, val and test splits decoded, uint8."""
    return (n // CLASSES + 2 * (held // CLASSES)) * CLASSES * 3 * SIZE * SIZE


# ---------------------------------------------------------------- memory of a process tree


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _tree(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def _memory(pid: int, use_pss: bool) -> tuple[int, int]:
    """(PSS, RSS) in bytes of one process; PSS is 0 without smaps_rollup."""
    pss = rss = 0
    try:
        if use_pss:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss = int(line.split()[1]) * 1024
                    elif line.startswith("Rss:"):
                        rss = int(line.split()[1]) * 1024
        else:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass  # the process ended between the listing and the read
    return pss, rss


PSS_AVAILABLE = Path(f"/proc/{os.getpid()}/smaps_rollup").exists()


@dataclass
class TreeMemory:
    """Samples a process tree's summed memory until ``stop``: (time, PSS, RSS, the root's own)."""

    pid: int
    every_s: float
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)
    most_procs: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            figures = [_memory(p, PSS_AVAILABLE) for p in pids]
            pss, rss = sum(f[0] for f in figures), sum(f[1] for f in figures)
            own = figures[0][0] if PSS_AVAILABLE else figures[0][1]
            self.samples.append((time.time(), pss if PSS_AVAILABLE else rss, rss, own))
            self.most_procs = max(self.most_procs, len(pids))
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        """The tree's peak: of summed PSS where the kernel gives it, else of summed RSS."""
        return max(s[1] for s in self.samples)

    @property
    def peak_rss(self) -> int:
        return max(s[2] for s in self.samples)

    @property
    def peak_root(self) -> int:
        """The engine process alone, without its workers."""
        return max(s[3] for s in self.samples)

    def peak_by_phase(self, phases: list[tuple[float, str]]) -> dict[str, int]:
        """The tree's peak within each phase (``phases``: start time and name, in order)."""
        out: dict[str, int] = {}
        for t, figure, _, _ in self.samples:
            name = "start"
            for start, phase in phases:
                if t >= start:
                    name = phase
            out[name] = max(out.get(name, 0), figure)
        return out


# ---------------------------------------------------------------- one job in a subprocess


@dataclass
class JobResult:
    name: str
    loader: dict[str, Any]
    rates: dict[str, list[float]]  # stage -> samples/s per epoch
    phases: list[tuple[float, str]]  # when the job reached: data, each stage, evaluate
    wall_s: float
    memory: TreeMemory

    @property
    def by_phase(self) -> dict[str, int]:
        return self.memory.peak_by_phase(self.phases)


def run_job(name: str, spec: dict[str, Any], budget: int | None, every_s: float) -> JobResult:
    """``spec`` run by ``core.runner.run_job`` on the CPU in a child process (this script with
    ``--child``), its memory sampled meanwhile; the budget goes in through the environment."""
    work = CACHE / "jobs" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    job = {"spec": spec, "out": str(work / "out"), "root": str(CACHE), "result": str(work / "result.json")}
    (work / "job.json").write_text(json.dumps(job))
    env = dict(os.environ)
    env.pop(BUDGET_ENV, None)
    if budget is not None:
        env[BUDGET_ENV] = str(budget)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(work / "job.json")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    memory = TreeMemory(proc.pid, every_s)
    _, err = proc.communicate()
    memory.stop()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"job {name} failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads((work / "result.json").read_text())
    rates: dict[str, list[float]] = {}
    for row in sorted(result["metrics"], key=lambda r: (r["stage"], r["epoch"])):
        rates.setdefault(row["stage"], []).append(row["samples_per_s"])
    phases = [(t, phase) for t, phase in result["phases"]]
    return JobResult(name, result["loader"], rates, phases, wall, memory)


def child(job_file: str) -> None:
    """In the job's process: run it, then write its loader choice, epoch metrics and phases."""
    from core.runner import run_job as engine_run_job
    from core.sink import Progress, Sink
    from core.spec import parse_spec

    class Recorder(Sink):
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.phases: list[tuple[float, str]] = [(time.time(), "data")]

        def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
            self.rows.append({"stage": stage, "epoch": epoch, **values})

        def log(self, message: str) -> None:
            if message.startswith("stage "):  # "stage <name>: <epochs> epochs on ..."
                self.phases.append((time.time(), message.split()[1].rstrip(":")))

        def progress(self, progress: Progress) -> None:
            if progress.stage == "evaluate" and self.phases[-1][1] != "evaluate":
                self.phases.append((time.time(), "evaluate"))

    job = json.loads(Path(job_file).read_text())
    sink = Recorder()
    report = engine_run_job(
        parse_spec(job["spec"]), Path(job["out"]), data_root=Path(job["root"]), device="cpu", sink=sink
    )
    assert report.dataset.loader is not None
    loader = report.dataset.loader.model_dump(mode="json")
    Path(job["result"]).write_text(
        json.dumps({"loader": loader, "metrics": sink.rows, "phases": sink.phases})
    )


def write_teacher(path: str, model: str) -> None:
    """Freshly initialized weights for ``model`` (JSON) on this script's images: a teacher whose
    forward pass costs what a trained one's does, without the training."""
    from core.models import build_net
    from core.models.io import save_weights
    from core.spec import JobSpec

    spec = JobSpec.model_validate({"student": {"model": json.loads(model)}}).student.model
    save_weights(build_net(spec, (3, SIZE, SIZE), CLASSES), Path(path))


def job_spec(
    folder: str,
    mode: str,
    epochs: int,
    teacher: dict[str, Any],
    student: dict[str, Any],
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """A job on ``folder``: its teacher trained for one epoch, or loaded from ``checkpoint``; the
    student distilled for ``epochs``; every split read as ``mode`` says."""
    trained = {"train": {"epochs": 1, "batch_size": 256}}
    return {
        "name": f"bench-stream-{folder}-{mode}",
        "seed": 0,
        "data": {"kind": "imagefolder", "path": folder, "image_size": SIZE, "loader": {"mode": mode}},
        "teacher": {"model": teacher, **({"checkpoint": checkpoint} if checkpoint else trained)},
        "student": {"model": student},
        "distill": {"epochs": epochs, "batch_size": 256},
        "baseline": False,
        "export": ["safetensors"],
        "runtime": {"measure_speed": False},
    }


# ---------------------------------------------------------------- the two measurements

# Part 1 is about memory: small models keep the jobs short (the decoding is the same work).
MEMORY_TEACHER = {"kind": "cnn", "channels": [4, 8], "hidden": 32}
MEMORY_STUDENT = {"kind": "mlp", "hidden": [32]}
# Part 2 is about throughput: conv nets whose step costs what a small image job's does on a CPU.
SPEED_TEACHER = {"kind": "cnn", "channels": [32, 64, 128], "hidden": 128}
SPEED_STUDENT = {"kind": "cnn", "channels": [16, 32], "hidden": 64}
PHASES = ("data", "teacher", "student", "evaluate")


def mib(n: float) -> str:
    return f"{n / MiB:.0f}"


def _model(spec: dict[str, Any]) -> str:
    if spec["kind"] == "mlp":
        return f"mlp({','.join(map(str, spec['hidden']))})"
    return f"{spec['kind']}({','.join(map(str, spec['channels']))}; hidden {spec['hidden']})"


@dataclass
class MemoryRun:
    images: int
    requested: str  # the spec's loader.mode
    budget: int
    decoded: int
    result: JobResult


def measure_memory(sizes: list[int], held: int, contrast: bool, every_s: float) -> list[MemoryRun]:
    """The streaming jobs (the smallest set twice, first and last), then with ``contrast`` the
    largest set in memory: what the same measurement shows when the data is held."""
    what = "PSS (/proc/<pid>/smaps_rollup)" if PSS_AVAILABLE else "RSS (/proc/<pid>/status)"
    print(
        f"\n== 1. peak memory: {what} summed over the job's process tree (engine + DataLoader "
        f"workers) at each {every_s * 1000:.0f} ms sample, in MiB"
    )
    print(
        f"   training split as listed, val/ and test/ {held} images each at every size; budget = decoded "
        "size / 4 (DISTILLERY_DATA_MEMORY_BYTES), loader.mode auto;\n"
        f"   teacher {_model(MEMORY_TEACHER)}, student {_model(MEMORY_STUDENT)}, 1 epoch each, batch 256; "
        "the smallest set runs again after the others (run-to-run spread)"
        + (", and the largest once more with loader.mode memory" if contrast else "")
    )
    print(
        f"   {'images':>7} {'decoded':>7} {'budget':>6} {'mode':>6} {'wkrs':>4} {'peak':>6} {'(RSS)':>6} "
        f"{'engine':>6} | {'peak in phase ' + ' / '.join(PHASES):>40} | {'student/s':>9} {'wall s':>6}"
    )
    plan = [(n, "auto") for n in [*sizes, sizes[0]]] + ([(sizes[-1], "memory")] if contrast else [])
    runs = []
    for n, mode in plan:
        folder = image_folder(n, held)
        decoded = decoded_bytes(n, held)
        budget = decoded // 4
        r = run_job(f"memory-{n}", job_spec(folder, mode, 1, MEMORY_TEACHER, MEMORY_STUDENT), budget, every_s)
        m = r.memory
        phases = " / ".join(mib(r.by_phase.get(p, 0)) for p in PHASES)
        print(
            f"   {n:7d} {mib(decoded):>7} {mib(budget):>6} {r.loader['mode']:>6} {r.loader['workers']:4d} "
            f"{mib(m.peak):>6} {mib(m.peak_rss):>6} {mib(m.peak_root):>6} | {phases:>40} | "
            f"{r.rates['student'][-1]:9.1f} {r.wall_s:6.1f}"
        )
        runs.append(MemoryRun(n, mode, budget, decoded, r))
    print(
        f"   the loader's reason at {sizes[-1]} images, auto: {runs[len(sizes) - 1].result.loader['reason']}"
    )
    return runs


def measure_speed(
    n: int, held: int, rounds: int, epochs: int, every_s: float
) -> list[tuple[JobResult, JobResult]]:
    folder = image_folder(n, held)
    print(
        f"\n== 2. throughput: {n} training images ({mib(decoded_bytes(n, held))} MiB decoded with val "
        f"and test: fits either way), teacher {_model(SPEED_TEACHER)} (initialized, not trained: the "
        f"cost is the same), student {_model(SPEED_STUDENT)}, batch 256"
    )
    print(
        f"   the student stage's samples/s in epoch {epochs} of {epochs} (the engine's epoch metric); "
        f"memory and stream alternate over {rounds} round(s), and so does which goes first"
    )
    checkpoint = "speed-teacher.safetensors"
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--write-teacher",
            str(CACHE / checkpoint),
            json.dumps(SPEED_TEACHER),
        ],
        check=True,
        cwd=ROOT,
    )
    print(
        f"   {'round':>5} {'mode':>6} {'wkrs':>4} {'student/s':>9} {'every epoch':>15} "
        f"{'peak MiB':>8} {'wall s':>6} {'stream/memory':>13}"
    )
    pairs = []
    for i in range(rounds):
        order = ("memory", "stream") if i % 2 == 0 else ("stream", "memory")
        got = {}
        for mode in order:
            spec = job_spec(folder, mode, epochs, SPEED_TEACHER, SPEED_STUDENT, checkpoint)
            got[mode] = run_job(f"speed-{mode}", spec, None, every_s)
        ratio = got["stream"].rates["student"][-1] / got["memory"].rates["student"][-1]
        for mode in order:
            r = got[mode]
            every = " ".join(f"{v:.1f}" for v in r.rates["student"])
            print(
                f"   {i + 1:5d} {mode:>6} {r.loader['workers']:4d} {r.rates['student'][-1]:9.1f} {every:>15} "
                f"{mib(r.memory.peak):>8} {r.wall_s:6.1f} {f'{ratio:.3f}' if mode == order[-1] else '':>13}"
            )
        pairs.append((got["memory"], got["stream"]))
    return pairs


def summary(memory: list[MemoryRun], speed: list[tuple[JobResult, JobResult]], judge: bool) -> None:
    """The figures, and the verdicts unless ``judge`` is false: a smoke run's sets are too small
    (below ``core.data.loading.STATS_ROWS`` rows, or a few batches, parts of the fixed overhead
    are not reached yet)."""
    print("\n== summary" + ("" if judge else " (--quick: a smoke run, too small to judge)"))

    def verdict(ok: bool) -> str:
        return ("PASS" if ok else "FAIL") if judge else "n/a"

    auto = [run for run in memory if run.requested == "auto"]
    held = [run for run in memory if run.requested == "memory"]
    smallest = min(run.images for run in auto)
    tiny = [run.result.memory.peak for run in auto if run.images == smallest]
    overhead = max(tiny)  # the fixed overhead: the tiny job's peak, the higher of its two runs
    large = max(auto, key=lambda run: run.images)
    growth = [large.result.memory.peak - peak for peak in (max(tiny), min(tiny))]
    excess = max(run.result.memory.peak - (run.budget + overhead) for run in auto)
    streamed = all(run.result.loader["mode"] == "stream" for run in auto)
    rows = [
        ("auto streams every set over its budget", "yes" if streamed else "NO", ""),
        (
            f"fixed overhead: peak of the {smallest}-image job",
            f"{mib(overhead)} MiB",
            f"the higher of 2 runs; they differ by {mib(max(tiny) - min(tiny))} MiB",
        ),
        (
            f"peak growth {smallest} -> {large.images} images, streaming",
            f"{growth[0] / MiB:+.0f} MiB",
            f"({growth[1] / MiB:+.0f} over the lower run) while the decoded data grows "
            f"{mib(large.decoded - min(run.decoded for run in auto))} MiB",
        ),
        (
            "peak <= budget + fixed overhead at every size",
            verdict(excess <= 0),
            f"largest excess {excess / MiB:+.0f} MiB",
        ),
    ]
    for run in held:
        extra = run.result.memory.peak - large.result.memory.peak
        rows.append(
            (
                f"the {run.images}-image job in memory instead",
                f"{extra / MiB:+.0f} MiB",
                f"than streaming; its decoded data is {mib(run.decoded)} MiB",
            )
        )
        rate = large.result.rates["student"][-1] / run.result.rates["student"][-1]
        rows.append(
            (
                "  its student samples/s, stream / memory (1 run each)",
                f"{rate:.3f}",
                "the small models above: decoding weighs more per sample",
            )
        )
    if speed:
        ratios = [s.rates["student"][-1] / m.rates["student"][-1] for m, s in speed]
        median = statistics.median(ratios)
        rows += [
            (
                f"student samples/s, stream / memory ({len(ratios)} rounds)",
                f"median {median:.3f}",
                f"min {min(ratios):.3f}, max {max(ratios):.3f}",
            ),
            ("stream keeps >= 0.80 of the in-memory rate (median)", verdict(median >= 0.8), ""),
        ]
    for what, figure, note in rows:
        print(f"   {what:52} {figure:>12}   {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument("--sizes", help="training images of the memory runs, comma-separated, smallest first")
    parser.add_argument("--held", type=int, help="images in val/ and in test/ of every folder")
    parser.add_argument("--speed-size", type=int, help="training images of the throughput runs")
    parser.add_argument("--rounds", type=int, help="memory/stream rounds of the throughput runs (0: skip)")
    parser.add_argument(
        "--epochs", type=int, help="student epochs of the throughput runs; the last is measured"
    )
    parser.add_argument(
        "--no-contrast", action="store_true", help="skip the largest set's in-memory run in part 1"
    )
    parser.add_argument("--sample-ms", type=float, default=50.0, help="memory sampling period")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--write-teacher", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.write_teacher:
        write_teacher(*args.write_teacher)
        return
    quick = args.quick
    sizes = (
        sorted(int(s) for s in args.sizes.split(","))
        if args.sizes
        else [500, 2000]
        if quick
        else [2000, 10000, 20000]
    )
    held = args.held or (200 if quick else 1000)
    speed_size = args.speed_size or (1000 if quick else 2000)
    rounds = args.rounds if args.rounds is not None else (1 if quick else 3)
    epochs = args.epochs or (1 if quick else 2)
    every_s = args.sample_ms / 1000
    print(
        f"{os.cpu_count()} CPUs; memory of a process tree: "
        f"{'PSS from /proc/<pid>/smaps_rollup' if PSS_AVAILABLE else 'RSS (no smaps_rollup)'}; "
        f"images in {CACHE.relative_to(ROOT)}"
    )
    t0 = time.perf_counter()
    for n in sorted({*sizes, speed_size}):
        image_folder(n, held)
    print(f"image folders ready in {time.perf_counter() - t0:.1f} s")
    memory = measure_memory(sizes, held, not (quick or args.no_contrast), every_s)
    speed = measure_speed(speed_size, held, rounds, epochs, every_s) if rounds else []
    summary(memory, speed, judge=not quick)
    shutil.rmtree(CACHE / "jobs", ignore_errors=True)  # the jobs' outputs; the images stay
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
