"""``python -m worker [--gpu N] [--gpu-type T] [--dispatcher]``: settings from DISTILLERY_* variables."""

from __future__ import annotations

import argparse

from store.settings import Settings
from worker.main import start_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker", description="Run a Distillery worker.")
    parser.add_argument("--gpu", help="GPU index for CUDA_VISIBLE_DEVICES (one worker per GPU)")
    parser.add_argument("--gpu-type", help="the queue this worker serves (default: DISTILLERY_GPU_TYPE)")
    parser.add_argument("--hostname", help="host part of the worker's node name (default: this host)")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--dispatcher", action="store_true", help="also publish queued jobs and reap")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.gpu_type:
        settings = settings.model_copy(update={"gpu_type": args.gpu_type})
    start_worker(settings, args.gpu, args.loglevel, hostname=args.hostname, dispatcher=args.dispatcher)


if __name__ == "__main__":
    main()
