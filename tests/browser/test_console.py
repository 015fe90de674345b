"""The web page's console views (issue 17) in a real headless Chromium against one real flashvl server
(offline vision stage, no language stage): boxes over the Ask preview, the review queue with a flagged
image's thumbnail, moderation of several images, a document's lines and table, a batch job from a folder,
the Ask view in Chinese, and the page's basics (no console errors or CSP violations, every control labelled,
readable contrast, Chinese UI, a phone-sized screen).

Set FLASHVL_SCREENSHOTS=DIR to keep a screenshot of each view (the README's come from here)."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from flashvl.pipeline.review.base import make_thumbnail
from flashvl.pipeline.review.sqlite import SqliteReviewStore
from flashvl.security.auth import hash_key, new_key
from flashvl.testing import start_server, stop_server
from tests.browser.helpers import Opened, browser_fixture  # noqa: F401 (the browser fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from render import render_table, render_text

pytestmark = pytest.mark.browser
STATIC = Path(__file__).resolve().parents[2] / "flashvl" / "web" / "static"
TIMEOUT_MS = 120_000
TABLE = [["Item", "Qty", "Price"], ["Coffee", "2", "7.00"], ["Tea", "1", "3.50"]]
SEEDED = 12  # flagged answers in the queue: more than one page (10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("console")
    reviews = folder / "reviews.sqlite3"
    store = SqliteReviewStore(reviews)
    for n in range(SEEDED):
        store.add(
            question=f"Is the sign in photo {n} safe?",
            answer=f"Answer {n}: yes",
            description=f"The detector found: stop sign ({n})",
            reasons=["vision and language disagree" if n % 2 else "low confidence 0.31"],
            image_sha256=[f"{n:02d}" + "ab" * 31],
            route="cascade",
            thumbnail=make_thumbnail(coffee_image()) if n == 0 else None,  # as arbitration keeps it
        )
    store.close()
    proc = start_server(["--language", "none", "--review-sqlite-path", str(reviews)], folder / "log")
    yield proc.base
    stop_server(proc.proc)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, str]]:
    """A server that asks for API keys: (base URL, an infer key, a reviewer's key, the flagged item's id)."""
    folder = tmp_path_factory.mktemp("console-keys")
    infer, reviewer = new_key(), new_key()
    store = SqliteReviewStore(folder / "reviews.sqlite3")
    item = store.add(
        question="How many cups?",
        answer="Three cups.",
        description="The detector found: cup",
        reasons=["count: the detector found 1 cup"],
        image_sha256=["cd" * 32],
        route="cascade",
        owner="key:app",
        thumbnail=make_thumbnail(coffee_image()),
    )
    store.close()
    keys = f"app:infer:{hash_key(infer)},alice:review:{hash_key(reviewer)}"
    args = ["--language", "none", "--api-keys", keys, "--review-sqlite-path", str(folder / "reviews.sqlite3")]
    proc = start_server(args, folder / "log")
    yield proc.base, infer, reviewer, item.id
    stop_server(proc.proc)


@pytest.fixture
def opened(browser: Browser, server: str) -> Iterator[Opened]:
    context = browser.new_context(viewport={"width": 1200, "height": 1000}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield Opened(context.new_page()).goto(f"{server}/")
    context.close()


def shoot(page: Page, name: str) -> None:
    folder = os.environ.get("FLASHVL_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def save(image: Image.Image, path: Path, fmt: str = "PNG") -> Path:
    image.convert("RGB").save(path, format=fmt)
    return path


def coffee_image() -> Image.Image:
    from skimage import data

    return Image.fromarray(np.asarray(data.coffee()))  # 600×400


def coffee(tmp_path: Path) -> Path:
    return save(coffee_image(), tmp_path / "coffee.jpg", "JPEG")


def view(page: Page, name: str) -> None:
    page.click(f"#view-tab-{name}")
    expect(page.locator(f"[data-view={name}]")).to_be_visible()


def test_ask_draws_the_detectors_boxes_over_the_preview(opened: Opened, tmp_path: Path) -> None:
    page = opened.page
    expect(page.locator("#view-tab-ask")).to_have_attribute("aria-selected", "true")
    page.set_input_files("#file-input", str(coffee(tmp_path)))
    page.fill("#question", "What objects are in the image?")
    page.click("#ask")
    box = page.locator("#ask-boxes .box[data-label=cup]")
    expect(box).to_be_visible()
    expect(box).to_contain_text("cup")
    # The detector's cup is 155-427 × 12-397 px of the 600×400 photo: the outline sits there on screen.
    img, outline = page.locator("#preview").bounding_box(), box.bounding_box()
    assert img and outline
    assert abs((outline["x"] - img["x"]) / img["width"] - 155.6 / 600) < 0.03
    assert abs((outline["x"] + outline["width"] - img["x"]) / img["width"] - 427.4 / 600) < 0.03
    assert abs((outline["y"] + outline["height"] - img["y"]) / img["height"] - 397.4 / 400) < 0.03
    word = page.locator("#answer .box-word[data-label=cup]").first
    expect(word).to_have_text("cup")
    box.hover()
    expect(word).to_have_class(re.compile(r"\bhot\b"))
    shoot(page, "ask")
    opened.clean()


def test_a_flagged_answer_is_resolved_from_the_page_and_leaves_the_queue(opened: Opened) -> None:
    page = opened.page
    view(page, "review")
    items = page.locator("#review-list .review-item")
    expect(items).to_have_count(10)
    expect(page.locator("#review-count-open")).to_have_text(str(SEEDED))
    expect(page.locator("#review-page")).to_have_text(f"1–10 of {SEEDED}")
    page.click("#review-next")
    expect(page.locator("#review-page")).to_have_text(f"11–{SEEDED} of {SEEDED}")
    expect(items).to_have_count(SEEDED - 10)
    page.click("#review-prev")
    expect(items).to_have_count(10)
    first = items.first
    expect(first).to_contain_text("Is the sign in photo 0 safe?")
    expect(first.locator(".review-reasons")).to_have_text("low confidence 0.31")
    expect(first.locator(".review-description")).to_contain_text("stop sign (0)")
    # The flagged image's thumbnail (fetched with the page's key, shown from a blob: URL under the CSP);
    # an item without one says so.
    thumbnail = first.locator("img.review-thumb-img")
    expect(thumbnail).to_be_visible()
    expect(thumbnail).to_have_attribute("src", re.compile(r"^blob:"))
    expect(thumbnail).to_have_accessible_name("The flagged image (thumbnail)")
    page.wait_for_function("() => document.querySelector('img.review-thumb-img').naturalWidth === 160")
    expect(items.nth(1).locator("img")).to_have_count(0)
    expect(items.nth(1).locator(".review-thumb")).to_contain_text("no thumbnail kept")
    shoot(page, "review")
    first_id = first.get_attribute("data-id")
    first.locator(".review-accept").click()
    expect(page.locator(f"#review-list [data-id='{first_id}']")).to_have_count(0)
    expect(page.locator("#review-count-open")).to_have_text(str(SEEDED - 1))
    expect(page.locator("#review-count-resolved")).to_have_text("1")

    second = items.first
    second_id = second.get_attribute("data-id")
    second.locator(".review-correct").click()
    second.locator(".review-fix").fill("No: the sign is a stop sign.")
    second.locator(".review-save").click()
    expect(page.locator(f"#review-list [data-id='{second_id}']")).to_have_count(0)

    page.fill("#review-reason", "disagree")
    page.press("#review-reason", "Enter")
    expect(page.locator("#review-page")).to_have_text("1–5 of 5")  # 6 disagreements; 1 corrected
    page.select_option("#review-status", "resolved")
    expect(items).to_have_count(1)
    expect(items.first.locator(".review-resolution")).to_contain_text("corrected: No: the sign is a stop sign.")
    page.fill("#review-reason", "")
    page.press("#review-reason", "Enter")
    expect(items).to_have_count(2)
    page.select_option("#review-status", "open")
    expect(page.locator("#review-page")).to_have_text(f"1–10 of {SEEDED - 2}")
    expect(page.locator("#review-next")).to_be_disabled()
    opened.clean()


def test_a_reviewer_sees_the_thumbnail_that_only_the_review_scope_may_fetch(
    browser: Browser, keyed_server: tuple[str, str, str, str]
) -> None:
    base, infer, reviewer, item_id = keyed_server
    url = f"{base}/review/{item_id}/thumbnail"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {infer}"}).status_code == 403  # the asker's own key
    allowed = httpx.get(url, headers={"Authorization": f"Bearer {reviewer}"})
    assert allowed.status_code == 200 and allowed.headers["cache-control"] == "private, no-store"
    context = browser.new_context(viewport={"width": 1200, "height": 1000}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    opened = Opened(context.new_page()).goto(f"{base}/#review", api_key=reviewer)
    page = opened.page
    page.click("#review-refresh")  # the first load went out before the key was typed
    thumbnail = page.locator("#review-list .review-item img.review-thumb-img")
    expect(thumbnail).to_be_visible()  # fetched with the key in a header, shown from a blob: URL
    page.wait_for_function("() => document.querySelector('img.review-thumb-img').naturalWidth === 160")
    # The browser logs the refusals: 401 before the key was typed, 403 for what a reviewer's key may not do
    # (the Ask view's limits need the infer scope).
    opened.clean(expected="the server responded with a status of 40")
    context.close()


def test_three_images_get_three_verdicts_with_the_flagged_line_outlined(opened: Opened, tmp_path: Path) -> None:
    page = opened.page
    view(page, "moderate")
    contact = save(render_text(["Spring sale", "Call 13812345678 today"]), tmp_path / "contact.png")
    plain = save(render_text(["Meeting at noon"]), tmp_path / "plain.png")
    page.set_input_files("#moderate-files", [str(coffee(tmp_path)), str(contact), str(plain)])
    expect(page.locator("#moderate-results .moderate-item[data-state=done]")).to_have_count(3)
    expect(page.locator("#moderate-results .verdict")).to_have_count(3)
    for verdict in page.locator("#moderate-results .verdict").all():
        assert verdict.get_attribute("data-verdict") in {"pass", "review", "block"}
    flagged = page.locator(".moderate-item", has_text="contact.png")
    expect(flagged.locator(".verdict")).not_to_have_attribute("data-verdict", "pass")
    expect(flagged.locator(".moderate-category[data-category=privacy]")).to_contain_text("ocr_rules")
    expect(flagged.locator(".box.flagged")).to_have_count(1)
    line = flagged.locator(".box.flagged").bounding_box()
    image = flagged.locator("img").bounding_box()
    assert line and image
    # the phone number's line (65-113 of the 393×148 picture), not the title above it
    assert abs((line["y"] - image["y"]) / image["height"] - 65 / 148) < 0.04
    assert abs(line["width"] / image["width"] - (376 - 17) / 393) < 0.04
    expect(page.locator("#moderate-status")).to_have_text("3 moderated.")
    shoot(page, "moderate")
    # Dropping an image on the view moderates it too.
    dropped = page.evaluate_handle(
        """(b64) => { const data = new DataTransfer();
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        data.items.add(new File([bytes], "dropped.png", { type: "image/png" })); return data; }""",
        base64.b64encode(plain.read_bytes()).decode(),
    )
    page.dispatch_event("#moderate-view", "drop", {"dataTransfer": dropped})
    expect(page.locator("#moderate-results .moderate-item[data-state=done]")).to_have_count(1)
    expect(page.locator("#moderate-results .moderate-name")).to_have_text("dropped.png")
    opened.clean()


def test_a_rendered_table_shows_as_a_table_with_its_lines_outlined(opened: Opened, tmp_path: Path) -> None:
    page = opened.page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    view(page, "documents")
    page.set_input_files("#doc-file", str(save(render_table(TABLE), tmp_path / "table.png")))
    page.click("#doc-read")
    rows = page.locator("#doc-tables table tr")
    expect(rows).to_have_count(3)
    assert [[cell.strip() for cell in row.locator("th, td").all_text_contents()] for row in rows.all()] == TABLE
    expect(page.locator("#doc-lines .doc-line")).to_have_count(9)
    expect(page.locator("#doc-boxes .box")).to_have_count(9)
    page.locator(".doc-copymd").click()
    assert page.evaluate("navigator.clipboard.readText()").startswith("| Item | Qty | Price |")
    page.select_option("#doc-example", "receipt")
    assert json.loads(page.input_value("#doc-schema"))["properties"].keys() == {"store", "date", "total"}
    page.click("#doc-extract")  # this server has no language stage: the page says so
    expect(page.locator("#doc-error")).to_contain_text("language stage")
    shoot(page, "documents")
    opened.clean(expected="status of 400")


def test_a_folder_job_runs_to_100_percent_with_one_parked_file(opened: Opened, tmp_path: Path) -> None:
    page = opened.page
    folder = tmp_path / "batch"
    folder.mkdir()
    rng = np.random.default_rng(17)
    for n in range(11):
        colour = rng.integers(0, 255, size=3, dtype=np.uint8)
        save(Image.fromarray(np.full((64, 64, 3), colour, dtype=np.uint8)), folder / f"img{n:02d}.png")
    (folder / "broken.png").write_bytes(b"this is not an image")
    view(page, "jobs")
    page.set_input_files("#jobs-folder", str(folder))
    page.click("#jobs-submit")
    job = page.locator("#jobs-list .job").first
    expect(job).to_have_attribute("data-finished", "true")
    expect(job.locator(".job-percent")).to_have_text("100%")
    expect(job.locator(".job-parked-item")).to_have_count(1)
    expect(job.locator(".job-parked-item")).to_contain_text("broken.png")
    with page.expect_download() as download:
        job.locator(".job-download-csv").click()
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.count("\n") >= 12 and "broken.png" in csv_text
    shoot(page, "jobs")
    job_id = job.get_attribute("data-job")
    page.reload()  # the jobs survive a reload (listed by GET /jobs), and the view too (#jobs)
    expect(page.locator(f"#jobs-list .job[data-job='{job_id}'] .job-percent")).to_have_text("100%")
    opened.clean()


CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b]
    .map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (node) => { for (; node; node = node.parentElement) {
    const c = rgb(getComputedStyle(node).backgroundColor);
    if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3); } return [255, 255, 255]; };
  const worst = [];
  for (const node of document.querySelectorAll("h1, h2, p, label, button, .hint, .view-tab, summary, span, li")) {
    if (!node.offsetParent || !node.textContent.trim()) continue;
    const [a, b] = [lum(rgb(getComputedStyle(node).color).slice(0, 3)), lum(background(node))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) worst.push(`${node.tagName}.${node.className} ${ratio.toFixed(2)}`);
  }
  return worst;
}"""
UNLABELLED = """() => Array.from(document.querySelectorAll("input, select, textarea, button, [role=tab]"))
  .filter((node) => !(node.labels && node.labels.length) && !node.getAttribute("aria-label")
    && !node.getAttribute("aria-labelledby") && !node.textContent.trim())
  .map((node) => node.id || node.outerHTML.slice(0, 80))"""


def test_the_ask_view_speaks_chinese_and_switches_to_english(browser: Browser, server: str, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 1000}, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    opened = Opened(context.new_page()).goto(f"{server}/")
    page = opened.page
    expect(page.locator("#view-tab-ask")).to_have_text("提问")  # the browser's language
    expect(page.locator("#ask")).to_have_text("提问")
    expect(page.locator("#stop")).to_have_text("停止")
    expect(page.locator("#file-input")).to_have_accessible_name("选择图片")
    expect(page.locator("#question")).to_have_accessible_name("2 · 问题")
    expect(page.locator("#question")).to_have_attribute("placeholder", "关于这张图片,问什么都可以…")
    expect(page.locator("#api-key")).to_have_accessible_description(re.compile("仅当服务器要求时填写"))
    expect(page.locator(".chips")).to_have_accessible_name("示例问题")
    expect(page.locator("#file-hint")).to_contain_text("百万像素")  # the server's limits, in Chinese
    page.click("#ask")  # no image yet: the page's own error, in Chinese
    expect(page.locator("#error")).to_have_text("请先选择图片。")
    page.set_input_files("#file-input", str(coffee(tmp_path)))
    expect(page.locator("#clear-file")).to_have_text("移除")
    page.fill("#question", "图中有哪些物体?")
    page.click("#ask")
    expect(page.locator("#answer")).to_have_attribute("data-state", "done")
    expect(page.locator("#status")).to_have_text(re.compile(r"^已完成,用时 \d"))
    expect(page.locator("#stage-summary dt")).to_contain_text(["合计", "路径", "置信度"])
    expect(page.locator("#stage-note")).to_contain_text("不是视觉语言模型")
    shoot(page, "ask-zh")
    page.select_option("#ui-lang", "en")  # what is on screen follows the switch, the answer stays
    expect(page.locator("#status")).to_have_text(re.compile(r"^Done in \d"))
    expect(page.locator("#stage-summary dt")).to_contain_text(["Total", "Route", "Confidence"])
    expect(page.locator("#stage-note")).to_contain_text("not a vision-language model")
    expect(page.locator("#file-input")).to_have_accessible_name("Choose an image")
    expect(page.locator("#question")).to_have_attribute("placeholder", "Ask anything about the image…")
    assert page.evaluate("document.documentElement.lang") == "en"
    page.select_option("#ui-lang", "zh")  # the Knowledge view, in Chinese too
    view(page, "knowledge")
    expect(page.locator("#kb-title")).to_have_text("知识库")
    expect(page.locator("#kb-upload")).to_have_text("上传")
    expect(page.locator("#kb-query")).to_have_accessible_name("在集合中搜索")
    expect(page.locator("#kb-question")).to_have_attribute("placeholder", "向这个集合提问")
    opened.clean()
    context.close()


def test_every_ui_text_has_both_languages() -> None:
    """Every key the page uses (data-i18n*, t(...) and setText(...) in the modules) has English and Chinese."""
    common = (STATIC / "console-common.js").read_text()
    en_block, zh_block = common.split("\n  zh: {", 1)
    key = r'(?:"([\w.]+)"|\b([a-z]\w*)):\s*"'
    en = {a or b for a, b in re.findall(key, en_block.split("\n  en: {", 1)[1])}
    zh = {a or b for a, b in re.findall(key, zh_block.split("\n};", 1)[0])}
    assert en == zh, f"only English: {sorted(en - zh)}; only Chinese: {sorted(zh - en)}"
    used = set(re.findall(r'data-i18n(?:-[a-z-]+)?="([\w.]+)"', (STATIC / "index.html").read_text()))
    for module in STATIC.glob("*.js"):
        text = module.read_text()
        used |= set(re.findall(r'\bt\(\s*"([\w.]+)"', text))
        if module.name != "console-common.js":  # any other "view.key" string is a key (setStatus, [key, values])
            used |= set(re.findall(r'"((?:ask|apikey|review|moderate|documents|jobs|kb)\.[\w.]+)"', text))
    assert {"ask.done", "ask.stopped", "ask.offlinelm", "review.thumbalt", "apikey.hint", "kb.hit"} <= used
    assert used - en == set()


def test_basics_labels_contrast_keyboard_language_and_phone(browser: Browser, server: str) -> None:
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", color_scheme=scheme)
        context.set_default_timeout(15_000)
        opened = Opened(context.new_page()).goto(f"{server}/")
        page = opened.page
        expect(page.locator("#view-tab-review")).to_have_text("审核", timeout=15_000)  # the browser's language
        expect(page.locator("#review-title")).to_have_text("人工审核队列")
        expect(page.locator("#ask")).to_have_text("提问")
        assert page.evaluate(UNLABELLED) == []
        assert page.evaluate(CONTRAST) == [], f"{scheme} ask (zh)"
        page.select_option("#ui-lang", "en")
        expect(page.locator("#view-tab-review")).to_have_text("Review")
        expect(page.locator("#ask")).to_have_text("Ask")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, "ask overflows a phone screen"
        assert page.evaluate(UNLABELLED) == []
        assert page.evaluate(CONTRAST) == [], f"{scheme} ask"
        page.focus("#view-tab-ask")
        for name in ("knowledge", "review", "moderate", "documents", "jobs"):  # the page's order
            page.keyboard.press("ArrowRight")
            expect(page.locator(f"#view-tab-{name}")).to_be_focused()
            expect(page.locator(f"[data-view={name}]")).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{name} overflows a phone screen"
            assert page.evaluate(UNLABELLED) == []
            assert page.evaluate(CONTRAST) == [], f"{scheme} {name}"
        assert page.evaluate("location.hash") == "#jobs"
        opened.clean()
        context.close()
