"""``cryoopt serve``: the API on a live server, and the page in a real browser (Playwright + Debian's chromium).

The browser test needs ``playwright`` (PyPI, the ``[ui]`` extra) and ``/usr/bin/chromium``
(``apt-get install chromium``, done by ``scripts/setup.sh``); it never downloads a browser.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the page needs the [ui] extra: pip install -e '.[ui]'")
pytest.importorskip("plotly", reason="the page needs the [ui] extra: pip install -e '.[ui]'")
import uvicorn  # noqa: E402
from ui_helpers import ImageExecutor, make_config  # noqa: E402

from cryoopt.campaign import Campaign, Journal  # noqa: E402
from cryoopt.ui import create_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def campaign_dir(tmp_path: Path) -> Path:
    d = tmp_path / "c"
    Campaign(make_config(), d, executor=ImageExecutor()).run()
    return d


@pytest.fixture
def server(campaign_dir: Path) -> Iterator[str]:
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(campaign_dir, poll_s=0.2), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            pytest.fail("the page's server did not start within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_api_reads_and_writes_through_the_campaign(server: str, campaign_dir: Path) -> None:
    state = _get(server + "/api/state")
    assert [t["id"] for t in state["trials"]] == [0, 1, 2, 3]
    rec = state["recommendation"]
    assert rec is not None and set(rec["expected"]) == {"objective", "prep_time_h"}
    assert state["units"]["x"] == "mm" and state["units"]["prep_time_h"] == "h"
    assert {"convergence", "pareto", "parallel"} <= set(state["figures"])
    trial = _get(server + "/api/trials/1")
    assert [s["section"] for s in trial["sections"]] == [1, 2]
    with urllib.request.urlopen(server + trial["sections"][0]["lm"], timeout=30) as r:
        assert r.headers["content-type"] == "image/png" and r.read()[:4] == b"\x89PNG"
    with pytest.raises(urllib.error.HTTPError):  # nothing outside the campaign's images is served
        urllib.request.urlopen(server + "/files/journal.sqlite", timeout=30)
    # a rating out of range and an unknown trial are refused with the library's message; nothing is stored
    assert _post(server + "/api/feedback", {"trial": 1, "rating": 9})[0] in (400, 422)
    code, body = _post(server + "/api/feedback", {"trial": 77, "rating": 3})
    assert code == 400 and "unknown trial" in body["detail"]
    assert Journal.open(campaign_dir).feedback() == []
    # inject: the missing parameter comes from the recommendation; out of range is refused
    code, body = _post(server + "/api/inject", {"params": {"x": 0.25}})
    assert code == 200 and body["filled_from_recommendation"] == ["y"] and body["params"]["y"] == rec["params"]["y"]
    code, body = _post(server + "/api/inject", {"params": {"x": 7}})
    assert code == 400 and "x" in body["detail"]
    queued = Journal.open(campaign_dir).pending_requests()
    assert len(queued) == 1 and queued[0][2]["params"] == {"x": 0.25, "y": rec["params"]["y"]}


def _chromium() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright ([ui] extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"the browser test needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium "
                    "(scripts/setup.sh does it as root)")
    return sync_api


def test_page_in_a_browser_live_update_rate_inject_pause(server: str, campaign_dir: Path) -> None:
    sync_api = _chromium()
    sync_api.expect.set_options(timeout=60_000)  # a GP refit per change; generous on a loaded 2-core machine
    profile = tempfile.mkdtemp(prefix="cryoopt-chromium-")
    dialogs: list[str] = []
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                             args=CHROMIUM_ARGS)
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.accept("crisp membranes")))
            # load: trials table, recommendation, plots drawn by plotly.js (served locally)
            page.goto(server + "/")
            rows = page.locator("#trials tbody tr")
            sync_api.expect(rows).to_have_count(4, timeout=30_000)
            sync_api.expect(page.get_by_test_id("rec-line")).to_contain_text("Adopt the protocol of trial")
            sync_api.expect(page.locator("#fig-convergence .main-svg").first).to_be_visible(timeout=30_000)
            sync_api.expect(page.locator("#fig-pareto .main-svg").first).to_be_visible()
            # live update: a trial finished by a campaign elsewhere appears without reloading
            Campaign(make_config(budget={"experiments": 5}), campaign_dir, executor=ImageExecutor()).run()
            sync_api.expect(rows).to_have_count(5, timeout=30_000)
            # rate a section: its images are shown, the rating lands in the journal with the section named
            page.locator("#trials tbody tr[data-trial='4']").click()
            card = page.get_by_test_id("section-2")
            sync_api.expect(card.locator("img")).to_have_count(2)
            assert card.locator("img").first.evaluate("img => img.complete && img.naturalWidth") == 32
            card.locator("button[data-rating='4']").click()
            sync_api.expect(page.locator("#detail-feedback")).to_contain_text("[section 2] crisp membranes")
            fb = Journal.open(campaign_dir).feedback(4)
            assert [(f.rating, f.note) for f in fb] == [(4, "[section 2] crisp membranes")]
            # inject with one field: the rest comes from the recommendation
            page.locator("#inject input[name='x']").fill("0.2")
            page.get_by_test_id("inject-submit").click()
            sync_api.expect(page.get_by_test_id("inject-result")).to_contain_text("queued")
            sync_api.expect(page.get_by_test_id("inject-result")).to_contain_text("y")
            assert Journal.open(campaign_dir).pending_requests()[0][2]["params"]["x"] == 0.2
            # pause: a campaign started now runs nothing until unpaused
            page.get_by_test_id("pause").click()
            sync_api.expect(page.get_by_test_id("status")).to_contain_text("PAUSED")
            assert Journal.open(campaign_dir).meta("operator_paused") is True
            camp = Campaign(make_config(budget={"experiments": 6}), campaign_dir, executor=ImageExecutor())
            starts = sum(kind == "start" for _, kind, _ in Journal.open(campaign_dir).events())
            runner = threading.Thread(target=camp.run, daemon=True)
            runner.start()
            deadline = time.monotonic() + 60
            while sum(kind == "start" for _, kind, _ in Journal.open(campaign_dir).events()) == starts:
                assert time.monotonic() < deadline, "the campaign did not start its session"
                time.sleep(0.1)
            time.sleep(1.5)  # the session is in its loop: paused, the injected trial waits
            assert Journal.open(campaign_dir).count(started=True) == 5
            page.get_by_test_id("pause").click()
            runner.join(timeout=30)
            assert not runner.is_alive()
            rows_after = Journal.open(campaign_dir).trials()
            assert len(rows_after) == 6 and rows_after[5].source == "manual" and rows_after[5].params["x"] == 0.2
            sync_api.expect(rows).to_have_count(6, timeout=30_000)
            page.screenshot(path=str(campaign_dir / "page.png"), full_page=True)
            browser.close()
            assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert any("section 2" in m for m in dialogs)
