// The Moderate view: one or many images, each POSTed to /moderate (multipart); per image the verdict
// (pass / review / block), each category with its score and the signals that raised it, and the OCR
// lines that raised a privacy or ads rule outlined on the image.
import { $, api, drawBoxes, make, t } from "./console-common.js";

const CONCURRENCY = 2;

function renderVerdict(li, img, layer, result) {
  const verdict = make("p", "verdict", null, { "data-verdict": result.suggestion });
  verdict.append(make("span", "", `${t("verdict")}: `), make("strong", `verdict-badge ${result.suggestion}`, result.suggestion));
  const categories = make("ul", "moderate-categories");
  for (const category of result.categories || []) {
    const item = make("li", "moderate-category", null, { "data-category": category.category });
    item.append(
      make("strong", "", category.category),
      make("span", "badge", `${category.level} · ${Math.round(category.score * 100)}%`),
      make("span", "hint", ` ${(category.raised_by || []).join(", ")}`),
    );
    const signals = make("ul", "moderate-signals");
    for (const signal of category.signals || []) {
      signals.append(make("li", "hint", `${signal.source}: ${signal.evidence} (${Math.round(signal.score * 100)}%)`));
    }
    item.append(signals);
    categories.append(item);
  }
  if (!(result.categories || []).length) categories.append(make("li", "hint", t("moderate.none")));
  const flagged = (result.flagged_lines || []).map((line) => ({
    box: line.box,
    label: line.categories.join(", "),
    kind: "flagged",
  }));
  const draw = () => drawBoxes(layer, img, flagged, result.image || {});
  if (img.complete && img.naturalWidth) draw();
  else img.addEventListener("load", draw, { once: true });
  li.append(verdict, categories);
}

async function moderateOne(file, li, img, layer) {
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const result = await api("moderate", { method: "POST", body: form });
    li.dataset.state = "done";
    renderVerdict(li, img, layer, result);
  } catch (err) {
    li.dataset.state = "error";
    li.append(make("p", "error", err.message, { role: "alert" }));
  }
}

async function moderateFiles(files) {
  if (!files.length) return;
  const list = $("moderate-results");
  list.replaceChildren();
  const jobs = files.map((file) => {
    const li = make("li", "moderate-item", null, { "data-state": "working" });
    const stage = make("div", "box-stage");
    const img = make("img", "thumb", null, { alt: file.name });
    img.src = URL.createObjectURL(file);
    const layer = make("span", "box-layer");
    stage.append(img, layer);
    li.append(make("h3", "moderate-name", file.name), stage);
    list.append(li);
    return { file, li, img, layer };
  });
  let done = 0;
  const status = $("moderate-status");
  status.textContent = t("moderate.working", { done, count: files.length });
  const queue = [...jobs];
  const worker = async () => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      await moderateOne(job.file, job.li, job.img, job.layer);
      done += 1;
      status.textContent = t("moderate.working", { done, count: files.length });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  status.textContent = t("moderate.done", { count: files.length });
}

$("moderate-files").addEventListener("change", (event) => moderateFiles(Array.from(event.target.files || [])));
// Images dropped anywhere on the view (app.js keeps a drop elsewhere from leaving the page).
const card = $("moderate-view");
card.addEventListener("dragover", (event) => event.preventDefault());
card.addEventListener("drop", (event) => {
  event.preventDefault();
  const files = Array.from((event.dataTransfer && event.dataTransfer.files) || []);
  moderateFiles(files.filter((file) => !file.type || file.type.startsWith("image/")));
});
