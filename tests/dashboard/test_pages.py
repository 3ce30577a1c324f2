"""The dashboard in a real browser against a real service: login, the live jobs list, the job
page's charts and report, the spec editor, cancel and delete, compare, the pool."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, Route, expect

from tests.dashboard.conftest import VIEWPORT, screenshot, submit
from tests.service import TINY_JOB, Service

LIVE = ("queued", "starting", "running", "retrying")
# A job that trains for several of the list's 2 s polls even on a fast machine, so the list
# shows it live before it ends (the tiny job can start and end between two polls).
LIVE_DATA = {**TINY_JOB["data"], "train_limit": 4000}
# Records, per job row, each status the page renders (a poll can change it between two reads
# of the test's).
RECORD_STATUSES = """() => {
  window.__statuses = {};
  const record = () => {
    for (const row of document.querySelectorAll("[data-testid=job-row]")) {
      const seen = (window.__statuses[row.dataset.jobId] ||= []);
      if (seen[seen.length - 1] !== row.dataset.status) seen.push(row.dataset.status);
    }
  };
  new MutationObserver(record).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"],
  });
}"""


def all_metrics(service: Service, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5000, **({"after": cursor} if cursor else {})}
        page = service.http.get(f"/v1/jobs/{job_id}/metrics", params=params).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return items


def chart_points(page: Page, chart: str) -> dict[str, int]:
    """Points per series of a chart, as the page drew them (its data-points attribute)."""
    raw = page.get_by_test_id(f"chart-{chart}").get_attribute("data-points", timeout=30_000)
    points: dict[str, int] = json.loads(raw or "{}")
    return points


def wait_for_points(page: Page, chart: str, expected: dict[str, int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (seen := chart_points(page, chart)) != expected:
        assert time.monotonic() < deadline, f"chart {chart}: {seen}, expected {expected}"
        time.sleep(0.2)


def test_a_bad_token_is_refused_and_a_good_one_logs_in(browser: Browser, service: Service) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{service.url}/#/jobs")
    expect(page).to_have_url(f"{service.url}/#/login?next=%23%2Fjobs")  # no token: the login page
    page.get_by_label("API token").fill("dst_not-a-real-token")
    page.get_by_test_id("login-submit").click()
    error = page.get_by_test_id("login-error")
    expect(error).to_contain_text("401")
    expect(error).to_contain_text("Unauthorized")
    screenshot(page, "login-bad-token")

    page.get_by_label("API token").fill(service.tokens["e2e-user"])
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("whoami")).to_have_text("e2e-user · e2e · member")
    expect(page).to_have_url(f"{service.url}/#/jobs")  # back where it was going
    assert page.evaluate("localStorage.getItem('distillery.token')") == service.tokens["e2e-user"]

    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-message")).to_have_text("You are logged out.")
    assert page.evaluate("localStorage.getItem('distillery.token')") is None
    context.close()


def test_a_revoked_token_sends_the_page_back_to_the_login(page: Page, service: Service) -> None:
    client = service.add_member("dash-revoked", "e2e")
    token = client.headers["Authorization"].removeprefix("Bearer ")
    token_id = client.get("/v1/me").json()["token_id"]
    page.goto(f"{service.url}/#/login")
    page.get_by_label("API token").fill(token)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("whoami")).to_contain_text("dash-revoked")

    assert service.admin.delete(f"/v1/tokens/{token_id}").status_code == 204
    # the list's next poll is refused: back to the login, saying why
    expect(page.get_by_test_id("login-message")).to_contain_text("Your token was refused", timeout=10_000)
    assert "#/login" in page.url


def test_the_jobs_list_follows_a_job_to_the_end_without_a_reload(page: Page, service: Service) -> None:
    page.goto(f"{service.url}/#/jobs")
    expect(page.get_by_test_id("jobs-summary")).to_contain_text("updated")
    page.evaluate("window.__marker = 'the same page'")
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    polls: list[int] = []  # statuses of the list's answers
    page.on("response", lambda r: polls.append(r.status) if "/v1/jobs?" in r.url else None)

    page.evaluate(RECORD_STATUSES)  # every status each row shows, as the page renders it

    job = submit(service, {**TINY_JOB, "name": "dash-live", "data": LIVE_DATA})
    row = page.locator(f'[data-testid=job-row][data-job-id="{job["id"]}"]')
    expect(row).to_be_visible(timeout=10_000)  # it appears by itself
    expect(row.get_by_test_id("job-link")).to_have_text("dash-live")
    expect(row.get_by_test_id("owner")).to_have_text("e2e-user")
    screenshot(page, "jobs-list-live")

    deadline = time.monotonic() + 240
    while (status := row.get_attribute("data-status")) != "succeeded":
        assert status not in ("failed", "cancelled"), service.all_logs()
        assert time.monotonic() < deadline, f"still {status}"
        time.sleep(0.2)
    shown = page.evaluate(f"window.__statuses[{job['id']!r}]")
    assert shown[0] in LIVE and shown[-1] == "succeeded", shown  # shown live before it ended
    expect(row.get_by_test_id("status")).to_have_text("succeeded")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    assert service.http.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"

    assert page.evaluate("window.__marker") == "the same page"  # never reloaded
    assert loads == []
    before = len(polls)
    page.wait_for_timeout(4500)  # two polls with nothing new: 304s, no body
    assert polls[before:] and set(polls[before:]) == {304}, polls
    screenshot(page, "jobs-list")


def test_the_list_filters_by_status_owner_and_name(
    page: Page, service: Service, finished_jobs: list[Any]
) -> None:
    page.goto(f"{service.url}/#/jobs")
    rows = page.get_by_test_id("job-row")
    expect(rows.first).to_be_visible()
    page.get_by_test_id("filter-name").fill("kd-ce")
    expect(rows).to_have_count(1)
    expect(rows.first.get_by_test_id("job-link")).to_have_text("dash-kd-ce")
    assert "name=kd-ce" in page.url  # the filters live in the URL
    page.get_by_test_id("filter-name").fill("")
    page.get_by_test_id("filter-status-failed").check()
    expect(page.get_by_test_id("jobs-body")).to_contain_text("No job matches these filters.")
    page.get_by_test_id("filter-status-failed").uncheck()
    page.get_by_test_id("filter-status-succeeded").check()
    expect(rows.first).to_be_visible()
    statuses = {r.get_attribute("data-status") for r in rows.all()}
    assert statuses == {"succeeded"}
    page.get_by_test_id("filter-owner").fill("nobody-else")
    expect(page.get_by_test_id("jobs-body")).to_contain_text("No job matches these filters.")
    page.get_by_test_id("filter-owner").fill("e2e-user")
    expect(rows.first).to_be_visible()
    assert "owner=e2e-user" in page.url


def glance_text(item: dict[str, Any], epochs: int) -> dict[str, str]:
    """What a succeeded job's row shows, from its item in GET /v1/jobs and its number of
    distillation epochs (the last one)."""
    result = item["result"]
    gain, stderr, best = result["kd_gain"], result["kd_gain_stderr"], result["best_epoch"]
    return {
        "result-top1": f"{result['student_top1'] * 100:.1f}%",
        "result-gain": f"KD {'+' if gain >= 0 else '−'}{abs(gain):.3f}"
        + ("" if stderr is None else f" ± {stderr:.3f}"),
        "result-epoch": f"best epoch {best} of {epochs}"
        if best < epochs
        else f"best epoch {best} (the last)",
    }


def test_the_jobs_list_shows_each_results_at_a_glance(
    page: Page, service: Service, finished_jobs: list[dict[str, Any]]
) -> None:
    items = service.http.get("/v1/jobs", params={"name": "dash-kd"}).json()["items"]
    jobs = {j["id"]: j for j in finished_jobs}
    assert {i["id"] for i in items} == set(jobs)
    page.goto(f"{service.url}/#/jobs?name=dash-kd")
    for item in items:
        job = jobs[item["id"]]
        assert item["result"]["best_epoch"] == job["report"]["student"]["best_epoch"]
        # the page reads the epochs from the job's spec: a finished job's progress is its
        # evaluation's (1 of 1), and the list's items carry no spec
        row = page.locator(f'[data-testid=job-row][data-job-id="{item["id"]}"]')
        for testid, text in glance_text(item, job["spec"]["distill"]["epochs"]).items():
            expect(row.get_by_test_id(testid)).to_have_text(text)
    screenshot(page, "jobs-list-results")


@pytest.mark.parametrize("best", [1, 3])
def test_the_row_says_when_the_weights_kept_are_not_the_last_epochs(
    page: Page, service: Service, finished_jobs: list[dict[str, Any]], best: int
) -> None:
    """Whatever epoch the tiny jobs peaked at: the list's answer is rewritten on its way in."""
    job = finished_jobs[1]  # three distillation epochs

    def rewrite(route: Route) -> None:
        response = route.fetch()
        if response.status != 200:
            route.fulfill(response=response)
            return
        body = response.json()
        for item in body["items"]:
            if item["id"] == job["id"]:
                item["result"]["best_epoch"] = best
        route.fulfill(response=response, json=body)

    page.route(re.compile(r"/v1/jobs\?"), rewrite)
    page.goto(f"{service.url}/#/jobs?name=dash-kd-ce")
    epoch = page.locator(f'[data-testid=job-row][data-job-id="{job["id"]}"]').get_by_test_id("result-epoch")
    if best < 3:
        expect(epoch).to_have_text(f"best epoch {best} of 3")
        expect(epoch).to_have_class(re.compile(r"\bbest-not-last\b"))
        expect(epoch).to_have_attribute("title", re.compile(f"epoch {best}'s, not the last"))
    else:
        expect(epoch).to_have_text("best epoch 3 (the last)")
        expect(epoch).not_to_have_class(re.compile(r"\bbest-not-last\b"))


def test_more_pages_come_with_the_cursor_and_waiting_jobs_say_why(page: Page, service: Service) -> None:
    # no worker serves gpu type "h9000": these wait, and cost the test's worker nothing
    spec = {**TINY_JOB, "resources": {"gpu_type": "h9000"}}
    ids = [submit(service, {**spec, "name": f"dash-page-{i:02d}"})["id"] for i in range(53)]
    try:
        page.goto(f"{service.url}/#/jobs?name=dash-page")
        rows = page.get_by_test_id("job-row")
        expect(rows).to_have_count(50)  # one page
        newest = rows.first
        expect(newest.get_by_test_id("job-link")).to_have_text("dash-page-52")
        expect(newest.get_by_test_id("waiting")).to_contain_text("#53")
        expect(newest.get_by_test_id("waiting")).to_contain_text("h9000")  # no worker serves it
        expect(newest.get_by_test_id("result")).to_have_count(0)  # no result before it succeeds
        screenshot(page, "jobs-list-waiting", full_page=False)
        page.get_by_test_id("more").click()
        expect(rows).to_have_count(53)
        expect(page.get_by_test_id("more")).to_be_hidden()  # the last page
        shown = [r.get_attribute("data-job-id") for r in rows.all()]
        assert shown == ids[::-1]  # newest first, none twice, none missing
    finally:
        for job_id in ids:
            service.http.post(f"/v1/jobs/{job_id}/cancel")
    expect(rows.first).to_have_attribute("data-status", "cancelled")  # the page keeps up


def test_the_job_page_charts_every_finished_epoch(
    page: Page, service: Service, finished_jobs: list[dict[str, Any]]
) -> None:
    job = finished_jobs[1]  # kd + ce: two loss terms
    metrics = all_metrics(service, job["id"])
    epochs: dict[tuple[str, str], set[int]] = defaultdict(set)
    for m in metrics:
        epochs[(m["stage"], m["name"])].add(m["epoch"])
    stages = {stage for stage, _ in epochs}
    # both students (transfer set or not); teacher and baseline unless kept from an earlier job
    assert {"student", "student.plain"} <= stages <= {"teacher", "baseline", "student", "student.plain"}
    if "teacher" in stages:  # an earlier job of the fixture may have trained (and kept) the same one
        assert epochs[("teacher", "val/top1")] == set(range(1, 6))  # every epoch the job ran
    assert epochs[("student", "val/top1")] == {1, 2, 3} == epochs[("student.plain", "val/top1")]

    page.goto(f"{service.url}/#/jobs/{job['id']}")
    expect(page.get_by_test_id("job-name")).to_have_text("dash-kd-ce")
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded")

    wait_for_points(page, "accuracy", {s: len(epochs[(s, "val/top1")]) for s in stages})
    wait_for_points(page, "lr", {s: len(epochs[(s, "lr")]) for s in stages})
    for stage in stages:
        curves = [n for s, n in epochs if s == stage and (n.startswith("train/") or n == "val/loss")]
        wait_for_points(page, f"loss-{stage}", {n: len(epochs[(stage, n)]) for n in curves})
    assert {n for s, n in epochs if s == "student"} >= {"train/loss", "train/kd", "train/ce"}

    # the curve is the data: uPlot's arrays hold the API's values, epoch by epoch
    drawn = page.evaluate(
        """() => {
            const u = document.querySelector('[data-testid=chart-accuracy]').uplot;
            return {x: u.data[0], labels: u.series.slice(1).map(s => s.label), ys: u.data.slice(1)};
        }"""
    )
    curve = zip(drawn["x"], drawn["ys"][drawn["labels"].index("student")], strict=True)
    values = {m["epoch"]: m["value"] for m in metrics if (m["stage"], m["name"]) == ("student", "val/top1")}
    assert {epoch: v for epoch, v in curve if v is not None} == pytest.approx(values)

    report = job["report"]
    expect(page.get_by_test_id("report")).to_be_visible()
    expect(page.get_by_test_id("kd-gain")).to_contain_text(f"{abs(report['kd_gain']):.3f}")
    expect(page.get_by_test_id("verdict")).to_have_text(report["verdict"])
    top1 = page.get_by_test_id("report-row-student").get_by_test_id("test-top1")
    expect(top1).to_have_text(f"{report['student']['test_top1'] * 100:.1f}%")
    expect(page.get_by_test_id("events-body")).to_contain_text("submitted by e2e-user")
    expect(page.get_by_test_id("spec")).to_contain_text("name: dash-kd-ce")
    screenshot(page, "job-page")
    # the job is over and everything it wrote is on the page: it stopped asking
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/v1/" in r.url else None)
    page.wait_for_timeout(4500)
    assert requests == []

    # a download goes through the bearer header: the saved file is the artifact, byte for byte
    artifacts = {a["name"]: a for a in service.http.get(f"/v1/jobs/{job['id']}/artifacts").json()["items"]}
    row = page.locator('[data-testid=artifact][data-name="student_torchscript"]')
    with page.expect_download() as info:
        row.get_by_role("button", name="Download").click()
    download = info.value
    assert download.suggested_filename == artifacts["student_torchscript"]["filename"]
    data = open(download.path(), "rb").read()  # noqa: SIM115 - a temporary file Playwright removes
    assert hashlib.sha256(data).hexdigest() == artifacts["student_torchscript"]["sha256"]
    assert page.get_by_test_id("artifact").count() == len(artifacts)

    # the spec, written back as YAML, is one the service accepts as it is
    page.get_by_test_id("edit-as-new").click()
    expect(page).to_have_url(re.compile(r"#/submit$"))
    expect(page.get_by_test_id("validation-status")).to_contain_text('Valid spec: "dash-kd-ce-2"')
    edited = yaml.safe_load(page.get_by_test_id("spec-editor").input_value())
    assert edited == {**job["spec"], "name": "dash-kd-ce-2"}


def spec_yaml(temperature: float) -> str:
    spec = {
        **TINY_JOB,
        "name": "dash-editor",
        "distill": {"epochs": 2, "batch_size": 50, "losses": [{"kind": "kd", "temperature": temperature}]},
    }
    return yaml.safe_dump(spec, sort_keys=False)


def test_the_editor_shows_field_errors_inline_and_submits_a_valid_spec(page: Page, service: Service) -> None:
    page.goto(f"{service.url}/#/submit")
    examples = service.http.get("/v1/spec/examples").json()["items"]
    editor = page.get_by_test_id("spec-editor")
    mnist = next(x for x in examples if x["name"] == "mnist1d")
    expect(editor).to_have_value(mnist["text"])  # the default template
    expect(page.get_by_test_id("validation-status")).to_contain_text("Valid")
    options = page.get_by_test_id("example-select").locator("option")
    assert {x["filename"] for x in examples} <= set(options.all_inner_texts())

    text = spec_yaml(-1)
    line = text.splitlines().index("    temperature: -1") + 1
    editor.fill(text)
    status = page.get_by_test_id("validation-status")
    expect(status).to_contain_text("1 problem")
    error = page.locator('[data-testid=spec-errors] li[data-field="distill.losses.0.temperature"]')
    expect(error).to_contain_text("distill.losses.0.temperature")
    expect(error).to_have_attribute("data-line", str(line))  # found in the YAML
    expect(page.locator(f'[data-testid=marked-line][data-line="{line}"]')).to_have_count(1)
    expect(page.locator(f'.gutter .bad[data-line="{line}"]')).to_be_visible()
    expect(page.get_by_test_id("submit-job")).to_be_disabled()
    screenshot(page, "submit-invalid")

    editor.fill("name: [unclosed\n")  # a YAML syntax error names its line
    expect(page.locator('[data-testid=spec-errors] li[data-field="body"]')).to_contain_text("malformed YAML")
    expect(page.get_by_test_id("submit-job")).to_be_disabled()

    editor.fill(spec_yaml(2.0))
    expect(status).to_contain_text('Valid spec: "dash-editor"')
    expect(page.get_by_test_id("spec-errors").locator("li")).to_have_count(0)
    expect(page.get_by_test_id("submit-job")).to_be_enabled()
    page.get_by_test_id("submit-job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/\w+$"))
    job_id = page.url.rsplit("/", 1)[-1]
    expect(page.get_by_test_id("job-name")).to_have_text("dash-editor")
    job = service.http.get(f"/v1/jobs/{job_id}").json()
    assert job["spec"]["distill"]["losses"][0]["temperature"] == 2.0 and job["owner"] == "e2e-user"
    service.http.post(f"/v1/jobs/{job_id}/cancel")  # frees the worker for the next tests


def test_cancel_and_delete_from_the_job_page(page: Page, service: Service) -> None:
    job = submit(service, {**TINY_JOB, "name": "dash-long", "distill": {"epochs": 300, "batch_size": 50}})
    page.goto(f"{service.url}/#/jobs/{job['id']}")
    badge = page.get_by_test_id("job-status")
    expect(badge).to_have_text("running", timeout=180_000)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("cancel").click()
    expect(badge).to_have_text(re.compile("^(cancelling|cancelled)$"))
    assert service.wait_for(job["id"], timeout=60)["status"] == "cancelled"
    expect(badge).to_have_text("cancelled", timeout=10_000)
    expect(page.get_by_test_id("job-failure")).to_contain_text("cancelled")
    screenshot(page, "job-cancelled")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("delete").click()
    expect(page).to_have_url(f"{service.url}/#/jobs")
    assert service.http.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_an_api_error_is_shown(page: Page, service: Service) -> None:
    page.goto(f"{service.url}/#/jobs/no-such-job")
    problem = page.get_by_test_id("job-error")
    expect(problem).to_contain_text("Not Found")
    expect(problem).to_contain_text("does not exist")


def test_compare_overlays_the_jobs(page: Page, service: Service, finished_jobs: list[dict[str, Any]]) -> None:
    page.goto(f"{service.url}/#/jobs?name=dash-kd")
    rows = page.get_by_test_id("job-row")
    expect(rows).to_have_count(2)
    for job in finished_jobs:
        page.locator(f'[data-testid=job-row][data-job-id="{job["id"]}"]').get_by_test_id("select-job").check()
    page.get_by_test_id("compare-selected").click()
    expect(page).to_have_url(re.compile(r"#/compare\?ids="))

    table = page.get_by_test_id("compare-table")
    for job in finished_jobs:
        expect(table.locator(f'th[data-job-id="{job["id"]}"]')).to_contain_text(job["name"])
    student = table.locator('tr[data-measure="student top-1"] td')
    expect(student).to_have_text([f"{j['report']['student']['test_top1'] * 100:.1f}%" for j in finished_jobs])
    labels = [f"{j['name']} ({j['id'][:6]})" for j in finished_jobs]
    wait_for_points(page, "compare-accuracy", {labels[0]: 4, labels[1]: 3})
    wait_for_points(page, "compare-train-kd", {labels[0]: 4, labels[1]: 3})
    wait_for_points(page, "compare-train-ce", {labels[1]: 3})  # only the second has a ce term
    screenshot(page, "compare")


def test_the_pool_page_shows_the_worker(page: Page, service: Service) -> None:
    page.goto(f"{service.url}/#/pool")
    pool = service.http.get("/v1/pool").json()
    worker = pool["workers"][0]
    row = page.locator(f'[data-testid=worker-row][data-worker-id="{worker["id"]}"]')
    expect(row).to_contain_text("online")
    expect(row).to_contain_text(worker["gpu_type"])
    expect(page.get_by_test_id("pool-teams")).to_be_visible()
    expect(page.get_by_test_id("pool-updated")).to_contain_text("updated")
    screenshot(page, "pool")


@pytest.fixture(autouse=True)
def _no_job_left_running(service: Service) -> Any:
    """A test that fails midway must not leave a long job holding the only worker."""
    yield
    jobs = service.http.get("/v1/jobs", params={"status": list(LIVE), "limit": 200}).json()["items"]
    for job in jobs:
        if job["name"] == "dash-long":
            service.http.post(f"/v1/jobs/{job['id']}/cancel")
