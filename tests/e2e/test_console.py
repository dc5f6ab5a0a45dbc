"""The web console in headless Chromium, as an operator uses it: sign in with a token, filter
the members, open one, sign out. Screenshots land in the test's directory (and in
$MEMBERFLOW_SCREENSHOTS when set)."""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared import tokens
from tests.api_support import TEA, ApiServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="Chromium and chromedriver are not installed "
                                       "(Debian: chromium, chromium-driver; .ci/run installs them)")


@pytest.fixture
def engine(two_shops: Engine) -> Engine:
    return two_shops


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.implicitly_wait(5)     # waits for an element to appear, not a fixed pause
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: object, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if out := os.environ.get("MEMBERFLOW_SCREENSHOTS"):
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(out) / path.name)
    return path


def token_for(engine: Engine, name: str, *rights: str) -> str:
    """A token for the tea shop, as an operator is given one."""
    with engine.begin() as conn:
        return tokens.create(conn, name=name, shops=[TEA], rights=list(rights),
                             expires_in=None, operator="test").token


def submit(driver: object, button: object) -> None:
    """Click a form's button or a link and wait (with a deadline) for the page it leads to."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")  # type: ignore[attr-defined]
    button.click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(old))


def test_sign_in_filter_open_a_member_and_sign_out(engine: Engine, browser: object,
                                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    d = browser
    token = token_for(engine, "console-alice", "read", "write")
    with ApiServer(engine) as api:
        # A level set by hand, so the member has a history to show.
        changed = api.call("POST", "/api/v1/shops/tea/levels", token=token,
                           body={"level": 1, "reason": "老客户回馈", "members": ["m3"]})
        assert changed.json["changed"] == 1

        d.get(api.url + "/console/shops/tea/members")          # type: ignore[attr-defined]
        assert d.current_url.endswith("/console/login")        # type: ignore[attr-defined]
        d.find_element(By.ID, "token").send_keys("mf_" + "x" * 43)  # type: ignore[attr-defined]
        submit(d, d.find_element(By.ID, "sign-in"))            # type: ignore[attr-defined]
        assert "unknown, expired or revoked" in d.find_element(  # type: ignore[attr-defined]
            By.ID, "error").text
        d.find_element(By.ID, "token").send_keys(token)        # type: ignore[attr-defined]
        submit(d, d.find_element(By.ID, "sign-in"))            # type: ignore[attr-defined]

        # One shop: straight to its members.
        assert d.find_element(By.ID, "total").text == "4"      # type: ignore[attr-defined]
        table = d.find_element(By.ID, "members").text          # type: ignore[attr-defined]
        assert "金卡" in table and "贵宾茶客" in table and "c1" not in table
        shot(d, tmp_path, "console-members")

        Select(d.find_element(By.ID, "tag")).select_by_visible_text("贵宾茶客")  # type: ignore[attr-defined]
        d.find_element(By.NAME, "min_spend").send_keys("200")  # type: ignore[attr-defined]
        submit(d, d.find_element(By.ID, "apply"))              # type: ignore[attr-defined]
        assert d.find_element(By.ID, "total").text == "1"      # type: ignore[attr-defined]
        links = d.find_elements(By.CSS_SELECTOR, "a.member")   # type: ignore[attr-defined]
        assert [a.text for a in links] == ["m1"]
        shot(d, tmp_path, "console-filtered")

        d.find_element(By.NAME, "min_spend").clear()           # type: ignore[attr-defined]
        d.find_element(By.NAME, "min_spend").send_keys("lots")  # type: ignore[attr-defined]
        submit(d, d.find_element(By.ID, "apply"))              # type: ignore[attr-defined]
        assert "min_spend" in d.find_element(By.ID, "error").text  # type: ignore[attr-defined]

        d.get(api.url + "/console/shops/tea/members/m3")        # type: ignore[attr-defined]
        assert d.find_element(By.ID, "level").text == "银卡"    # type: ignore[attr-defined]
        history = d.find_element(By.ID, "level-history").text  # type: ignore[attr-defined]
        assert "manual" in history and "token:console-alice" in history and "老客户回馈" in history
        shot(d, tmp_path, "console-member")

        # The shop's ladder, tags and campaigns, from the navigation.
        submit(d, d.find_element(By.LINK_TEXT, "Levels"))      # type: ignore[attr-defined]
        ladder = d.find_element(By.ID, "levels").text          # type: ignore[attr-defined]
        assert "金卡" in ladder and "net spend >= 500.00" in ladder
        submit(d, d.find_element(By.LINK_TEXT, "Tags"))        # type: ignore[attr-defined]
        assert "贵宾茶客" in d.find_element(By.ID, "tags").text  # type: ignore[attr-defined]
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO campaign_sends (shop_id, campaign_id, message_id, member_id, "
                "channel, sent_at) VALUES ('tea', 'spring-tea', 's1', 'm1', 'sms', now())")
        submit(d, d.find_element(By.LINK_TEXT, "Campaigns"))   # type: ignore[attr-defined]
        assert "history" in d.find_element(By.ID, "campaigns").text  # type: ignore[attr-defined]
        assert "spring-tea" in d.find_element(By.ID, "effect").text  # type: ignore[attr-defined]
        # The chart is an image the page loads after it: wait for it (with a deadline).
        width = WebDriverWait(d, 30).until(lambda drv: drv.execute_script(
            "const i = document.getElementById('effect-chart');"
            "return i.complete && i.naturalWidth ? i.naturalWidth : false"))
        assert width > 500
        shot(d, tmp_path, "console-campaigns")

        submit(d, d.find_element(By.LINK_TEXT, "Reports"))     # type: ignore[attr-defined]
        assert "no order events yet" in d.find_element(By.ID, "no-data").text  # type: ignore[attr-defined]
        submit(d, d.find_element(By.LINK_TEXT, "Growth and churn")) # type: ignore[attr-defined]
        assert d.find_element(By.ID, "report-title").text == "Growth and churn"  # type: ignore[attr-defined]
        assert "no order events yet" in d.find_element(By.ID, "no-data").text  # type: ignore[attr-defined]

        # Another shop's member: the same answer as no such shop.
        d.get(api.url + "/console/shops/coffee/members/c1")     # type: ignore[attr-defined]
        assert "no shop 'coffee'" in d.find_element(By.ID, "error").text  # type: ignore[attr-defined]

        d.get(api.url + "/console/shops/tea/members")          # type: ignore[attr-defined]
        submit(d, d.find_element(By.ID, "sign-out"))           # type: ignore[attr-defined]
        assert d.current_url.endswith("/console/login")        # type: ignore[attr-defined]
        d.get(api.url + "/console/shops/tea/members")          # type: ignore[attr-defined]
        assert d.current_url.endswith("/console/login")        # type: ignore[attr-defined]

    with engine.connect() as conn:
        logins = conn.exec_driver_sql("SELECT shop_id, operator, address FROM audit_log "
                                      "WHERE action = 'console.login'").all()
    assert [tuple(r) for r in logins] == [("tea", "token:console-alice", "127.0.0.1")]


def test_change_a_member_from_the_console(engine: Engine, browser: object,
                                          tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    writer = token_for(engine, "console-bob", "read", "write")
    reader = token_for(engine, "console-eve", "read")
    with ApiServer(engine) as api:
        form = urllib.parse.urlencode({"change": "blacklist", "reason": "x"}).encode()
        page = "/console/shops/tea/members/m3"
        # Read-only, or from another site's page: refused, and nothing changes.
        for cookie, origin, status in ((reader, None, 403),
                                       (writer, "http://shop-spam.example", 403)):
            headers = {"Cookie": f"mf_console={cookie}",
                       "Content-Type": "application/x-www-form-urlencoded"}
            if origin:
                headers["Origin"] = origin
            assert api.call("POST", page, body=form, headers=headers).status == status

        d.get(api.url + "/console/login")                      # type: ignore[attr-defined]
        # Each sign-in and sign-out waits for the page it leads to: the next page read before
        # the cookie is set would be the sign-in page.
        d.find_element(By.ID, "token").send_keys(reader)       # type: ignore[attr-defined]
        submit(d, d.find_element(By.ID, "sign-in"))            # type: ignore[attr-defined]
        d.get(api.url + page)                                  # type: ignore[attr-defined]
        assert not d.find_elements(By.ID, "changes")           # type: ignore[attr-defined]
        submit(d, d.find_element(By.ID, "sign-out"))           # type: ignore[attr-defined]

        d.find_element(By.ID, "token").send_keys(writer)       # type: ignore[attr-defined]
        submit(d, d.find_element(By.ID, "sign-in"))            # type: ignore[attr-defined]
        d.get(api.url + page)                                  # type: ignore[attr-defined]
        level_form = d.find_element(By.ID, "change-level")     # type: ignore[attr-defined]
        Select(level_form.find_element(By.NAME, "level")).select_by_visible_text("2 · 金卡")
        level_form.find_element(By.NAME, "reason").send_keys("年度大客户")
        submit(d, level_form.find_element(By.TAG_NAME, "button"))
        assert d.find_element(By.ID, "notice").text == "Level set."  # type: ignore[attr-defined]
        assert d.find_element(By.ID, "level").text == "金卡"    # type: ignore[attr-defined]
        assert "年度大客户" in d.find_element(By.ID, "level-history").text  # type: ignore[attr-defined]

        # A reason of spaces passes the browser's check and not the server's: said, nothing done.
        marks = d.find_element(By.ID, "change-marks")          # type: ignore[attr-defined]
        marks.find_element(By.NAME, "reason").send_keys("   ")
        submit(d, marks.find_element(By.CSS_SELECTOR, "button[value=blacklist]"))
        assert "reason: say why" in d.find_element(By.ID, "error").text  # type: ignore[attr-defined]
        marks = d.find_element(By.ID, "change-marks")          # type: ignore[attr-defined]
        marks.find_element(By.NAME, "reason").send_keys("chargebacks")
        submit(d, marks.find_element(By.CSS_SELECTOR, "button[value=blacklist]"))
        assert d.find_element(By.ID, "notice").text == "Put on the blacklist."  # type: ignore[attr-defined]
        assert "blacklisted" in d.find_element(By.ID, "tags").text  # type: ignore[attr-defined]

        for change, notice, held in (("tag-remove", "Tag removed.", False),
                                     ("tag-add", "Tag added.", True)):
            tag_form = d.find_element(By.ID, "change-tag")     # type: ignore[attr-defined]
            Select(tag_form.find_element(By.NAME, "tag")).select_by_visible_text("贵宾茶客")
            tag_form.find_element(By.NAME, "reason").send_keys("品鉴会")
            submit(d, tag_form.find_element(By.CSS_SELECTOR, f"button[value={change}]"))
            assert d.find_element(By.ID, "notice").text == notice  # type: ignore[attr-defined]
            assert ("贵宾茶客" in d.find_element(By.ID, "tags").text) is held  # type: ignore[attr-defined]
        shot(d, tmp_path, "console-member-changed")

    with engine.connect() as conn:
        done = conn.exec_driver_sql(
            "SELECT action FROM audit_log WHERE shop_id = 'tea' AND operator = "
            "'token:console-bob' ORDER BY id").scalars().all()
        member = conn.exec_driver_sql("SELECT level, blacklisted FROM members WHERE shop_id = "
                                      "'tea' AND member_id = 'm3'").one()
    assert done == ["console.login", "levels.set", "blacklist.add", "tags.remove", "tags.add"]
    assert tuple(member) == (2, True)
