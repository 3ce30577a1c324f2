"""``python -m worker [--gpus 0,1 | --gpu N | --slots N] [--gpu-type T] [--dispatcher]``: settings
from DISTILLERY_* variables."""

from __future__ import annotations

import argparse

from store.settings import Settings
from worker.main import start_worker
from worker.slots import Slots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description="Run a Distillery worker host.")
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--gpus", help="this host's GPU indices, such as 0,1,2,3 (a job slot each)")
    devices.add_argument("--gpu", help="one GPU index: the same as --gpus N")
    devices.add_argument(
        "--slots", type=int, help="a machine without GPUs: this many CPU job slots (default 1)"
    )
    parser.add_argument("--gpu-type", help="the GPU type this host serves (default: DISTILLERY_GPU_TYPE)")
    parser.add_argument("--hostname", help="host part of the worker's node name (default: this host)")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--dispatcher", action="store_true", help="also publish queued jobs and reap")
    args = parser.parse_args(argv)
    try:
        slots = Slots.of(args.gpus or args.gpu, args.slots)
    except ValueError as e:
        parser.error(str(e))
    settings = Settings()
    if args.gpu_type:
        settings = settings.model_copy(update={"gpu_type": args.gpu_type})
    start_worker(settings, slots, args.loglevel, hostname=args.hostname, dispatcher=args.dispatcher)


if __name__ == "__main__":
    main()
