"""The fleet page in a real headless browser (Debian's chromium, driven by selenium through
chromium-driver): it asks for the token without one, lists the sites with their state and
drift causes with it, and redraws when the fleet changes. Skipped only when chromium or its
driver is not installed (scripts/setup installs both)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_runtime.cli.main import main
from tests.fleet.peers import PeerSite, core_config, poll, provisioned, running_core, secured_broker

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) missing")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SITES = ["north-1", "north-2", "north-3"]
TOKEN = "page-test-token"
MANAGED = '[[pipelines]]\ntype = "windows"\nname = "t"\ntopics = ["t/+"]\n'


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup does it)")
    return chromium, driver


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    chromium, driver = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    try:
        chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
    except WebDriverException as exc:
        pytest.skip(f"chromium does not start here: {exc.msg}")
    try:
        yield chrome
    finally:
        chrome.quit()


_READ_TABLE = """
const out = {};
for (const tr of document.querySelectorAll("#sites tbody tr")) {
  out[tr.dataset.site] = {
    state: tr.dataset.state,
    causes: Array.from(tr.querySelectorAll("li")).map(li => li.dataset.cause),
    text: tr.innerText,
  };
}
return out;
"""


def rows(chrome: Any) -> dict[str, dict[str, Any]]:
    """The sites table as the browser shows it, read in one script (a redraw cannot come
    between two reads)."""
    found: dict[str, dict[str, Any]] = chrome.execute_script(_READ_TABLE)
    return found


def wait(chrome: Any, predicate: Any, what: str) -> Any:
    try:
        return WebDriverWait(chrome, 60, poll_frequency=0.2).until(lambda c: predicate(rows(c)))
    except Exception as exc:  # selenium's TimeoutException: say what the page showed
        raise AssertionError(f"{what}; the page shows {rows(chrome)}") from exc


async def test_fleet_page_in_a_headless_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _binaries()
    monkeypatch.setenv("FLEET_PAGE_TOKEN", TOKEN)
    registry = tmp_path / "registry"
    ids = provisioned(registry, tmp_path, SITES)
    broker = secured_broker(registry)
    config = core_config(registry, broker.port, tmp_path / "core.db").model_copy(
        update={"http_token_env": "FLEET_PAGE_TOKEN"}
    )
    managed = tmp_path / "m.toml"
    managed.write_text(MANAGED)
    try:
        async with running_core(config) as core, contextlib.AsyncExitStack() as stack:
            assert core.ops is not None and core.fleet is not None
            peers = [PeerSite(ids[s], "north", broker.port) for s in SITES]
            for peer in peers:
                await stack.enter_async_context(peer)
            await poll(lambda: len(core.fleet.beats) == 3, "three sites heard")
            base = f"http://127.0.0.1:{core.ops.port}/fleet"

            def look() -> dict[str, Any]:
                with browser() as chrome:
                    chrome.get(base)  # no token: the page says how to give it
                    WebDriverWait(chrome, 60, poll_frequency=0.2).until(
                        lambda c: "ops token" in c.find_element(By.ID, "error").text
                    )
                    asked = chrome.find_element(By.ID, "error").text
                    chrome.get(base + "#token=" + TOKEN)
                    first = wait(
                        chrome,
                        lambda r: (
                            set(r) == set(SITES)
                            and all(v["state"] == "unmanaged" for v in r.values())
                        ),
                        "three unmanaged sites",
                    )
                    first = rows(chrome)
                    kept_out_of_url = "token" not in chrome.current_url
                    # a change: bundle published, the canary holds, the rest wait for wave 2
                    peers[0].answer = "applying:"
                    argv = ["fleet", "publish", "--group", "north", "--config", str(managed)]
                    argv += ["--registry", str(registry), "--broker", f"127.0.0.1:{broker.port}"]
                    assert main(argv) == 0
                    second = wait(
                        chrome,
                        lambda r: (
                            r.get("north-1", {}).get("causes") == ["not_applied"]
                            and r["north-2"]["causes"] == ["pending_wave"]
                        ),
                        "the canary applying, the others pending",
                    )
                    second = rows(chrome)
                    groups = chrome.find_element(By.ID, "groups").text
                    peers[0].answer = "rolled_back:not healthy"
                    peers[0].retake()
                    wait(
                        chrome,
                        lambda r: (
                            r["north-1"]["causes"] == ["rolled_back"]
                            and r["north-3"]["causes"] == ["halted"]
                        ),
                        "the canary rolled back, the rollout halted",
                    )
                    third = rows(chrome)
                    halted = chrome.find_element(By.ID, "groups").text
                return {
                    "asked": asked,
                    "first": first,
                    "second": second,
                    "third": third,
                    "groups": groups,
                    "halted": halted,
                    "token_out_of_url": kept_out_of_url,
                }

            seen = await asyncio.to_thread(look)
    finally:
        broker.close()
    print("\nthe fleet page, as chromium showed it:")
    for name in ("first", "second", "third"):
        for site, row in seen[name].items():
            print(f"  {name:<6} {site}: {row['text']!r}")
    assert "/fleet#token=" in seen["asked"]
    assert seen["token_out_of_url"]
    assert "rolling" in seen["groups"] and "1 of 2" in seen["groups"]
    assert "halted" in seen["halted"] and "north-1: rolled_back (not healthy)" in seen["halted"]
    assert "rolled back: not healthy" in seen["third"]["north-1"]["text"]
    assert "halted before this site" in seen["third"]["north-2"]["text"]
    assert seen["third"]["north-1"]["state"] == "drift"


async def test_the_page_opens_without_the_token_its_data_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No browser needed: /fleet is served to anyone (it holds no data), /fleet.json and
    /status answer 401 without the bearer token and 200 with it."""
    monkeypatch.setenv("FLEET_PAGE_TOKEN", TOKEN)
    registry = tmp_path / "registry"
    provisioned(registry, tmp_path, SITES[:1])
    broker = secured_broker(registry)
    config = core_config(registry, broker.port, tmp_path / "core.db").model_copy(
        update={"http_token_env": "FLEET_PAGE_TOKEN"}
    )
    answers: dict[str, int] = {}
    try:
        async with running_core(config) as core, aiohttp.ClientSession() as http:
            assert core.ops is not None
            base = f"http://127.0.0.1:{core.ops.port}"
            for path in ("/fleet", "/fleet.json", "/status"):
                async with http.get(base + path) as resp:
                    answers[path] = resp.status
                    if path == "/fleet":
                        page = await resp.text()
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(base + "/fleet.json", headers=auth) as resp:
                answers["/fleet.json with the token"] = resp.status
                doc = await resp.json()
    finally:
        broker.close()
    assert answers == {
        "/fleet": 200,
        "/fleet.json": 401,
        "/status": 401,
        "/fleet.json with the token": 200,
    }
    # one page, no external assets
    assert not any(s in page for s in ("src=", "href=", "http://", "https://", "@import"))
    assert [row["site"] for row in doc["sites"]] == SITES[:1]
    assert doc["sites"][0]["state"] == "never_heard"
