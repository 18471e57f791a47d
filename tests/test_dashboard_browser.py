"""The dashboard in a real headless Chromium (the system's `chromium`, driven by playwright; never
`playwright install`) while a small market runs on a real server: a cheating solver is caught
in a dispute played over HTTP, then the browser follows market → job → dispute → the slashed
solver's account, checks that the drawn bisection ends at the step and chunk the API reports,
checks the log's consistency in the browser, and fails on any console error. Each page is
screenshotted (the account page at a phone's 390×844): into docs/screenshots/ when
VERITRAIN_WRITE_SCREENSHOTS=1, else into the test's temporary directory."""

import os
import shutil
from pathlib import Path

import pytest

from protocol.wire import JobState
from tests.coordinator.market import train_tiny_job
from tests.coordinator.server import REFEREE_TIMEOUT, client_factory, running_server
from tests.coordinator.test_disputes import open_forged_dispute, play_out_forged_dispute

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# docs/screenshots/ is refreshed only on request, so a test run leaves the tree clean
DOCS_SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
SHOTS_ENV = "VERITRAIN_WRITE_SCREENSHOTS"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium binary on PATH (apt-get install chromium; .ci/run installs it as root)",
)


@pytest.fixture
def server(tmp_path):
    with running_server("sqlite", tmp_path) as server:
        yield server


@pytest.fixture
def make_client(server):
    with client_factory(server.url, timeout=REFEREE_TIMEOUT) as make:
        yield make


def _play_caught_solver(make_client, trained):
    """tests/coordinator/test_disputes.py's cheating solver, up to the ruling."""
    _submitter, solver, verifier, forged, dispute = open_forged_dispute(make_client, trained)
    ruling, _, _ = play_out_forged_dispute(solver, verifier, dispute.id, trained, forged)
    assert ruling.winner == "verifier" and ruling.phase == "over"
    assert solver.get_job(trained.job_id).state is JobState.FAILED
    return solver, ruling


def test_dashboard_in_chromium(server, make_client, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    trained = train_tiny_job(tmp_path / "solver")
    solver, ruling = _play_caught_solver(make_client, trained)
    shots = DOCS_SHOTS if os.environ.get(SHOTS_ENV) == "1" else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            context.add_init_script("window.vtPaused = true")  # no self-reload mid-test
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))

            page.goto(server.url + "/")
            assert page.title() == "veritrain · market"
            page.screenshot(path=shots / "market.png", full_page=True)

            page.click(f'#state-failed a[href="/jobs/{trained.job_id}"]')
            page.wait_for_url(f"**/jobs/{trained.job_id}")
            assert page.text_content("#job-state") == "failed"
            assert page.locator("tr.kind-job-solver_slashed").count() == 1
            page.screenshot(path=shots / "job.png", full_page=True)

            page.click(f'a.dispute[href="/disputes/{ruling.id}"]')
            page.wait_for_url(f"**/disputes/{ruling.id}")
            pinned = page.locator("#pinned")
            assert pinned.get_attribute("data-step") == str(ruling.dispute_step)
            assert pinned.get_attribute("data-chunk") == str(ruling.dispute_chunk)
            assert page.get_attribute("#ruling", "data-winner") == "verifier"
            last = page.locator("ol.rounds li").last
            assert "chunks" in last.get_attribute("class")
            assert last.locator(".interval").text_content() == (
                f"[{ruling.dispute_chunk}, {ruling.dispute_chunk + 1})"
            )
            page.screenshot(path=shots / "dispute.png", full_page=True)

            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            page.click("#solver")
            page.wait_for_url(f"**/accounts/{solver.public_key}")
            slash = page.locator("tr.kind-job-solver_slashed")
            assert slash.count() == 1 and slash.locator("td.delta").text_content().startswith("-")
            assert slash.locator(f'a[href="/jobs/{trained.job_id}"]').count() == 1
            page.screenshot(path=shots / "account-phone.png", full_page=True)

            page.set_viewport_size({"width": 1100, "height": 900})
            page.goto(server.url + "/log")
            page.click("#check")
            page.wait_for_selector('#result[data-result="ok"]', timeout=10_000)
            page.screenshot(path=shots / "log.png", full_page=True)
        finally:
            browser.close()
    assert not errors, errors
