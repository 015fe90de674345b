// The Review view: answers flagged by arbitration (GET /review, `review` scope), filtered by status and
// reason, a page at a time; each resolved as accepted, corrected (with the corrected answer) or rejected.
// The open/resolved counts refresh every few seconds while the view is open.
import { $, api, make, onLanguage, showError, t } from "./console-common.js";

const PAGE = 10;
const POLL_MS = 5000;
const view = { offset: 0, count: 0, visible: false, timer: null };

function field(term, value, className = "") {
  const row = make("div", `review-field ${className}`.trim());
  row.append(make("span", "review-term", term), make("span", "review-value", value || "–"));
  return row;
}

let thumbnailUrls = []; // blob: URLs of the page shown; revoked when it is drawn again

/** The item's thumbnail, fetched with the page's API key (an <img src> could not send it), as a blob: URL. */
async function showThumbnail(id, img) {
  try {
    const response = await api(`review/${encodeURIComponent(id)}/thumbnail`, { headers: { Accept: "image/*" }, raw: true });
    const url = URL.createObjectURL(await response.blob());
    thumbnailUrls.push(url);
    img.src = url;
    img.hidden = false;
  } catch {
    img.replaceWith(make("span", "hint", t("review.noimage")));
  }
}

function renderItem(item) {
  const li = make("li", "review-item", null, { "data-id": item.id, "data-status": item.status });
  const head = make("div", "review-head");
  head.append(
    make("span", "badge", item.route),
    make("span", "hint", new Date(item.created * 1000).toLocaleString()),
    make("span", "hint", item.owner ? `· ${item.owner}` : ""),
  );
  const thumb = make("div", "review-thumb", null, { title: (item.image_sha256 || []).join(", ") });
  const sha = make("code", "", (item.image_sha256 || []).map((digest) => digest.slice(0, 12)).join(" ") || "–");
  if (item.has_thumbnail) {
    const img = make("img", "review-thumb-img", null, { alt: t("review.thumbalt") });
    img.hidden = true;
    thumb.append(img, sha);
    showThumbnail(item.id, img);
  } else {
    thumb.append(sha, make("span", "hint", t("review.noimage")));
  }
  const reasons = make("ul", "review-reasons", null, { "aria-label": t("review.reasons") });
  for (const reason of item.reasons || []) reasons.append(make("li", "", reason));
  li.append(
    head,
    thumb,
    field(t("review.question"), item.question),
    field(t("review.answer"), item.answer, "review-answer"),
    field(t("review.vision"), item.description, "review-description"),
    make("div", "review-term", t("review.reasons")),
    reasons,
  );
  if (item.status === "resolved") {
    const res = item.resolution || {};
    li.append(
      field("✓", `${res.verdict || ""}${res.corrected_answer ? `: ${res.corrected_answer}` : ""}`, "review-resolution"),
    );
    if (item.resolved_by) li.append(field("by", item.resolved_by));
    return li;
  }
  const actions = make("div", "console-row review-actions");
  const accept = make("button", "secondary review-accept", t("review.accept"), { type: "button" });
  const reject = make("button", "secondary review-reject", t("review.reject"), { type: "button" });
  const correct = make("button", "secondary review-correct", t("review.correct"), {
    type: "button",
    "aria-expanded": "false",
  });
  const editor = make("div", "review-editor");
  editor.hidden = true;
  const areaId = `review-fix-${item.id}`;
  const area = make("textarea", "review-fix", null, { id: areaId, rows: "3", maxlength: "8000" });
  area.value = item.answer || "";
  const save = make("button", "primary review-save", t("review.save"), { type: "button" });
  editor.append(make("label", "field-label", t("review.corrected"), { for: areaId }), area, save);
  const error = make("div", "error", null, { role: "alert" });
  error.hidden = true;
  const resolve = async (verdict, corrected) => {
    for (const button of [accept, reject, correct, save]) button.disabled = true;
    try {
      const json = { verdict };
      if (corrected !== undefined) json.corrected_answer = corrected;
      await api(`review/${encodeURIComponent(item.id)}/resolve`, { method: "POST", json });
      await load();
    } catch (err) {
      showError(error, err);
      for (const button of [accept, reject, correct, save]) button.disabled = false;
    }
  };
  accept.addEventListener("click", () => resolve("accept"));
  reject.addEventListener("click", () => resolve("reject"));
  correct.addEventListener("click", () => {
    editor.hidden = !editor.hidden;
    correct.setAttribute("aria-expanded", String(!editor.hidden));
    if (!editor.hidden) area.focus();
  });
  save.addEventListener("click", () => resolve("corrected", area.value.trim()));
  actions.append(accept, correct, reject);
  li.append(actions, editor, error);
  return li;
}

function query() {
  const params = new URLSearchParams({ status: $("review-status").value, limit: String(PAGE), offset: String(view.offset) });
  const reason = $("review-reason").value.trim();
  if (reason) params.set("reason", reason);
  return `review?${params}`;
}

function renderCounts(body) {
  $("review-count-open").textContent = String(body.counts ? body.counts.open : "–");
  $("review-count-resolved").textContent = String(body.counts ? body.counts.resolved : "–");
}

async function load() {
  try {
    const body = await api(query());
    showError($("review-error"), null);
    if (body.items.length === 0 && view.offset > 0 && body.count > 0) {
      view.offset = Math.max(0, view.offset - PAGE); // the last item of a page left the queue
      return load();
    }
    view.count = body.count;
    renderCounts(body);
    const list = $("review-list");
    for (const url of thumbnailUrls) URL.revokeObjectURL(url);
    thumbnailUrls = [];
    list.replaceChildren(...body.items.map(renderItem));
    if (!body.items.length) list.append(make("li", "hint review-empty", t("review.empty")));
    const from = body.count ? view.offset + 1 : 0;
    $("review-page").textContent = t("review.page", { from, to: view.offset + body.items.length, count: body.count });
    $("review-prev").disabled = view.offset === 0;
    $("review-next").disabled = view.offset + PAGE >= body.count;
  } catch (err) {
    showError($("review-error"), err);
  }
}

/** Only the counts (and the list when it changed size), while the view is open. */
async function poll() {
  if (!view.visible || document.hidden) return;
  try {
    const body = await api(query());
    renderCounts(body);
    if (body.count !== view.count) load();
  } catch {
    // the next full load shows the error
  }
}

$("review-status").addEventListener("change", () => {
  view.offset = 0;
  load();
});
$("review-reason").addEventListener("change", () => {
  view.offset = 0;
  load();
});
$("review-refresh").addEventListener("click", load);
$("review-prev").addEventListener("click", () => {
  view.offset = Math.max(0, view.offset - PAGE);
  load();
});
$("review-next").addEventListener("click", () => {
  view.offset += PAGE;
  load();
});
document.addEventListener("flashvl:view", (event) => {
  view.visible = event.detail === "review";
  clearInterval(view.timer);
  if (view.visible) {
    load();
    view.timer = setInterval(poll, POLL_MS);
  }
});
onLanguage(() => {
  if (view.visible) load();
});
