"""The README's dashboard screenshots (docs/img/dashboard-*.png), taken from a real service.

    .venv/bin/python -m tests.dashboard.screenshots [--out docs/img]

Starts the embedded service (API + one worker) in a temporary directory, runs two short
MNIST-1D jobs to the end (two distillation recipes, to compare), starts a long one and queues
one that no worker can take, then photographs each page in Debian's headless Chromium at
1280x800. About four minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from playwright.sync_api import FloatRect, Page, expect, sync_playwright

from tests.dashboard.conftest import ROOT, TOKEN_KEY, VIEWPORT, launch
from tests.service import Service, running

EXAMPLE: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "mnist1d.yaml").read_text())


def recipe(name: str, losses: list[dict[str, Any]], teacher_epochs: int, epochs: int) -> dict[str, Any]:
    spec = copy.deepcopy(EXAMPLE)
    spec["name"] = name
    spec["teacher"]["train"]["epochs"] = teacher_epochs
    spec["distill"] |= {"epochs": epochs, "losses": losses}
    return spec


def submit(service: Service, spec: dict[str, Any]) -> str:
    r = service.http.post("/v1/jobs", json=spec)
    r.raise_for_status()
    return str(r.json()["id"])


def shoot(page: Page, path: Path, height: int | None = None) -> None:
    time.sleep(0.5)  # let transitions (progress bars) settle
    if height is None:
        page.screenshot(path=str(path))
    else:  # the top of the whole page, taller than the window
        clip: FloatRect = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
        page.screenshot(path=str(path), full_page=True, clip=clip)
    print("wrote", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def take(service: Service, out: Path) -> None:
    kd = [{"kind": "kd", "weight": 1.0, "temperature": 4.0}]
    kd_ce = [{"kind": "kd", "weight": 0.5, "temperature": 2.0}, {"kind": "ce", "weight": 0.5}]
    done = [
        submit(service, recipe("mnist1d-kd-t4", kd, 40, 60)),
        submit(service, recipe("mnist1d-kd-ce-t2", kd_ce, 40, 60)),
    ]
    for job_id in done:
        assert service.wait_for(job_id, timeout=600)["status"] == "succeeded", service.all_logs()
    long = submit(service, recipe("mnist1d-long", kd, 40, 2000))
    waiting = {**recipe("on-an-a100", kd, 40, 60), "resources": {"gpu_type": "a100"}}  # no such worker
    waiting_id = submit(service, waiting)
    service.wait_for(long, ("running",))

    with sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(f"{service.url}/#/login")
        page.evaluate(f"t => localStorage.setItem('{TOKEN_KEY}', t)", service.tokens["e2e-user"])

        page.goto(f"{service.url}/#/jobs")
        expect(page.get_by_test_id("job-row")).to_have_count(4)
        time.sleep(4)  # a few epochs of the long job: its progress bar moves
        shoot(page, out / "dashboard-jobs.png")

        page.goto(f"{service.url}/#/pool")
        expect(page.get_by_test_id("worker-row")).to_contain_text("mnist1d-long")
        shoot(page, out / "dashboard-pool.png")

        page.goto(f"{service.url}/#/jobs/{done[0]}")
        expect(page.get_by_test_id("report")).to_be_visible()
        expect(page.get_by_test_id("chart-lr")).to_be_visible()
        shoot(page, out / "dashboard-job.png", height=1500)

        page.goto(f"{service.url}/#/compare?ids={','.join(done)}")
        expect(page.get_by_test_id("chart-compare-train-ce")).to_be_visible()
        shoot(page, out / "dashboard-compare.png", height=1500)

        page.goto(f"{service.url}/#/submit")
        editor = page.get_by_test_id("spec-editor")
        expect(editor).not_to_have_value("")
        text = editor.input_value().replace("temperature: 4.0", "temperature: -1")
        editor.fill(text)
        expect(page.get_by_test_id("spec-errors")).to_contain_text("temperature")
        editor.evaluate("el => { el.blur(); el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
        page.evaluate("window.scrollTo(0, 0)")
        shoot(page, out / "dashboard-submit-error.png")
        browser.close()

    for job_id in (long, waiting_id):
        service.http.post(f"/v1/jobs/{job_id}/cancel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="distillery-shots-") as home, running(Path(home)) as service:
        take(service, args.out.resolve())


if __name__ == "__main__":
    main()
