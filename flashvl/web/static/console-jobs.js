// The Batch jobs view: submit a folder (browser directory upload; each image sent inline as a data:
// URL) or a JSONL manifest to POST /jobs; every job of the caller (GET /jobs, so they survive a reload)
// with a progress bar from /jobs/{id}, its parked items with their errors, and its results as JSONL/CSV.
import { $, api, make, readAsDataUrl, showError, t } from "./console-common.js";

const POLL_MS = 1500;
const IMAGE_NAME = /\.(jpe?g|png|webp|gif|bmp|tiff?|avif)$/i;
const view = { visible: false, timer: null, parkedShown: new Map() }; // parkedShown: job id -> {count, items}

async function manifestFromFolder(files) {
  const images = files.filter((file) => IMAGE_NAME.test(file.name) || file.type.startsWith("image/"));
  $("jobs-status").textContent = t("jobs.reading", { count: images.length });
  const lines = [];
  for (const file of images) {
    const key = (file.webkitRelativePath || file.name).slice(0, 200);
    lines.push(JSON.stringify({ image: await readAsDataUrl(file), key }));
  }
  return lines.join("\n");
}

async function download(job, format) {
  const response = await api(`jobs/${encodeURIComponent(job.job_id)}/results?format=${format}`, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = make("a", "", null, { href: url, download: `${job.job_id}.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function showParked(job, list) {
  const known = view.parkedShown.get(job.job_id);
  if (known && known.count === job.parked) {
    list.replaceChildren(...known.items.map((text) => make("li", "job-parked-item", text)));
    return;
  }
  const rows = (await api(`jobs/${encodeURIComponent(job.job_id)}/results?format=jsonl`, { raw: true }).then((r) => r.text()))
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line))
    .filter((row) => row.status === "parked");
  const items = rows.map((row) => `${row.key}: ${row.error}`);
  list.replaceChildren(...items.map((text) => make("li", "job-parked-item", text)));
  view.parkedShown.set(job.job_id, { count: job.parked, items }); // fetched again only when the count changes
}

function renderJob(job) {
  const li = make("li", "job", null, { "data-job": job.job_id, "data-finished": String(Boolean(job.finished)) });
  const finished = (job.done || 0) + (job.parked || 0);
  const percent = job.total ? Math.round((finished / job.total) * 100) : 0;
  const head = make("div", "job-head");
  head.append(make("strong", "", job.job_id), make("span", "badge", job.task));
  const bar = make("progress", "job-bar", null, {
    max: String(job.total || 1),
    value: String(finished),
    "aria-label": `${job.job_id}: ${percent}%`,
  });
  const left = (job.total || 0) - finished;
  const text = make("span", "job-percent", `${percent}%`);
  const counts = make("span", "hint", ` ${t("jobs.progress", { done: job.done || 0, parked: job.parked || 0, left })}`);
  const actions = make("div", "console-row");
  for (const format of ["jsonl", "csv"]) {
    const button = make("button", `secondary job-download-${format}`, t("jobs.download", { format: format.toUpperCase() }), {
      type: "button",
    });
    button.addEventListener("click", () => download(job, format).catch((err) => showError($("jobs-error"), err)));
    actions.append(button);
  }
  const parked = make("ul", "job-parked", null, { "aria-label": `${t("jobs.parked")} · ${job.job_id}` });
  li.append(head, bar, text, counts, actions, parked);
  if (job.parked) {
    li.insertBefore(make("div", "review-term", t("jobs.parked")), parked);
    showParked(job, parked).catch(() => {});
  }
  return li;
}

async function load() {
  try {
    const body = await api("jobs?limit=50");
    showError($("jobs-error"), null);
    const list = $("jobs-list");
    list.replaceChildren(...body.jobs.map(renderJob));
    if (!body.jobs.length) list.append(make("li", "hint", t("jobs.empty")));
    return body.jobs;
  } catch (err) {
    showError($("jobs-error"), err);
    return [];
  }
}

async function poll() {
  clearTimeout(view.timer);
  if (!view.visible) return;
  const jobs = await load();
  if (jobs.some((job) => !job.finished)) view.timer = setTimeout(poll, POLL_MS);
}

$("jobs-submit").addEventListener("click", async () => {
  const folder = Array.from($("jobs-folder").files || []);
  const manifest = $("jobs-manifest").files[0];
  if (!folder.length && !manifest) return showError($("jobs-error"), new Error(t("jobs.nothing")));
  showError($("jobs-error"), null);
  $("jobs-submit").disabled = true;
  try {
    const body = folder.length ? await manifestFromFolder(folder) : await manifest.text();
    const task = encodeURIComponent($("jobs-task").value);
    const job = await api(`jobs?task=${task}`, {
      method: "POST",
      body,
      headers: { "Content-Type": "application/x-ndjson" },
    });
    $("jobs-status").textContent = t("jobs.submitted", { id: job.job_id });
    $("jobs-folder").value = "";
    $("jobs-manifest").value = "";
    poll();
  } catch (err) {
    $("jobs-status").textContent = "";
    showError($("jobs-error"), err);
  } finally {
    $("jobs-submit").disabled = false;
  }
});

document.addEventListener("flashvl:view", (event) => {
  view.visible = event.detail === "jobs";
  if (view.visible) poll();
  else clearTimeout(view.timer);
});
