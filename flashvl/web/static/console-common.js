// Shared by the console views (console-*.js): the API call with the page's key, safe element
// building (server text only ever via textContent), boxes over an image, and the UI language.

const STRINGS = {
  en: {
    language: "Language", refresh: "Refresh", prev: "Previous", next: "Next",
    "review.title": "Review queue", "review.hint": "Answers that arbitration flagged for a person. Needs the review scope.",
    "review.status": "Status", "review.open": "Open", "review.resolved": "Resolved", "review.all": "All",
    "review.reason": "Reason contains", "review.empty": "Nothing in the queue.", "review.question": "Question",
    "review.answer": "Answer", "review.vision": "Vision stage saw", "review.reasons": "Why it was flagged",
    "review.accept": "Accept", "review.reject": "Reject", "review.correct": "Correct…", "review.save": "Save correction",
    "review.corrected": "Corrected answer", "review.noimage": "image (not kept by the queue)",
    "review.page": "{from}–{to} of {count}",
    "moderate.title": "Moderate images", "moderate.pick": "Choose or drop images to moderate (one or many)",
    "moderate.working": "Moderating {done} of {count}…", "moderate.done": "{count} moderated.",
    "moderate.none": "No category reached the review threshold.",
    "documents.title": "Documents", "documents.pick": "A page, receipt or form", "documents.read": "Read",
    "documents.lines": "Lines in reading order", "documents.fields": "Key fields", "documents.example": "Schema example",
    "documents.invoice": "Invoice", "documents.receipt": "Receipt", "documents.idcard": "ID card (masked)",
    "documents.schema": "JSON schema of the fields", "documents.extract": "Extract fields",
    "documents.table": "Table {n}", "documents.copymd": "Copy as Markdown", "documents.copycsv": "Copy as CSV",
    "documents.copied": "Copied.", "documents.reading": "Reading…", "documents.noimage": "Choose an image first.",
    "documents.badschema": "The schema is not valid JSON: {error}",
    "jobs.title": "Batch jobs", "jobs.hint": "Needs the batch scope. Jobs run on the server and survive a page reload.",
    "jobs.task": "Task", "jobs.folder": "A folder of images", "jobs.manifest": "or a JSONL manifest",
    "jobs.submit": "Submit", "jobs.nothing": "Choose a folder or a manifest first.", "jobs.submitted": "Submitted {id}.",
    "jobs.empty": "No jobs yet.", "jobs.progress": "{done} done · {parked} parked · {left} left",
    "jobs.parked": "Parked items", "jobs.download": "Download {format}", "jobs.reading": "Reading {count} files…",
    verdict: "Verdict", unauthorized: "This needs an API key with the right scope: enter it under “API key”.",
  },
  zh: {
    language: "语言", refresh: "刷新", prev: "上一页", next: "下一页",
    "review.title": "人工审核队列", "review.hint": "仲裁标记为需要人工审核的回答。需要 review 权限。",
    "review.status": "状态", "review.open": "待处理", "review.resolved": "已处理", "review.all": "全部",
    "review.reason": "原因包含", "review.empty": "队列为空。", "review.question": "问题", "review.answer": "回答",
    "review.vision": "视觉阶段所见", "review.reasons": "标记原因", "review.accept": "通过", "review.reject": "驳回",
    "review.correct": "更正…", "review.save": "保存更正", "review.corrected": "更正后的回答",
    "review.noimage": "图片(队列不保存图片)", "review.page": "第 {from}–{to} 条,共 {count} 条",
    "moderate.title": "图片审核", "moderate.pick": "选择或拖入要审核的图片(可多选)", "moderate.working": "正在审核 {done}/{count}…",
    "moderate.done": "已审核 {count} 张。", "moderate.none": "没有类别达到复审阈值。",
    "documents.title": "文档", "documents.pick": "页面、小票或表单", "documents.read": "识别", "documents.lines": "按阅读顺序的文本行",
    "documents.fields": "关键字段", "documents.example": "模式示例", "documents.invoice": "发票", "documents.receipt": "小票",
    "documents.idcard": "身份证(脱敏)", "documents.schema": "字段的 JSON schema", "documents.extract": "抽取字段",
    "documents.table": "表格 {n}", "documents.copymd": "复制为 Markdown", "documents.copycsv": "复制为 CSV",
    "documents.copied": "已复制。", "documents.reading": "识别中…", "documents.noimage": "请先选择图片。",
    "documents.badschema": "schema 不是合法的 JSON:{error}",
    "jobs.title": "批量任务", "jobs.hint": "需要 batch 权限。任务在服务器上运行,刷新页面后仍在。", "jobs.task": "任务",
    "jobs.folder": "图片文件夹", "jobs.manifest": "或 JSONL 清单", "jobs.submit": "提交", "jobs.nothing": "请先选择文件夹或清单。",
    "jobs.submitted": "已提交 {id}。", "jobs.empty": "还没有任务。", "jobs.progress": "完成 {done} · 搁置 {parked} · 剩余 {left}",
    "jobs.parked": "搁置的条目", "jobs.download": "下载 {format}", "jobs.reading": "正在读取 {count} 个文件…",
    verdict: "结论", unauthorized: "需要有相应权限的 API key:请在“API key”中填写。",
  },
};

const LANG_STORAGE = "flashvl.lang";
export let lang = localStorage.getItem(LANG_STORAGE) || ((navigator.language || "en").startsWith("zh") ? "zh" : "en");
const listeners = [];

export function t(key, values = {}) {
  const text = (STRINGS[lang] && STRINGS[lang][key]) || STRINGS.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

/** Sets the UI language, rewrites every [data-i18n] text, and tells the views (they re-render). */
export function setLanguage(value) {
  lang = value === "zh" ? "zh" : "en";
  localStorage.setItem(LANG_STORAGE, lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const listener of listeners) listener(lang);
}

export function onLanguage(listener) {
  listeners.push(listener);
}

export const $ = (id) => document.getElementById(id);

/** An element whose text is set with textContent (server text is never parsed as HTML). */
export function make(tag, className, text, attrs = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

export function authHeaders(extra = {}) {
  const key = (($("api-key") && $("api-key").value) || sessionStorage.getItem("flashvl.apiKey") || "").trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** fetch() with the page's API key; JSON in and out; a refusal becomes an ApiError with the server's message. */
export async function api(path, { method = "GET", json, body, headers = {}, raw = false } = {}) {
  const init = { method, headers: authHeaders({ Accept: "application/json", ...headers }) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const payload = await response.json().catch(() => null);
    const error = payload && payload.error;
    if (response.status === 401 || response.status === 403) {
      const box = $("api-key-box");
      if (box) box.open = true;
    }
    const message = (error && error.message) || (typeof error === "string" ? error : `HTTP ${response.status}`);
    throw new ApiError(response.status, (error && error.code) || "", response.status === 401 ? t("unauthorized") : message);
  }
  return raw ? response : response.json();
}

export function showError(node, err) {
  node.textContent = err ? err.message || String(err) : "";
  node.hidden = !err;
}

const pct = (value) => `${(Math.max(0, Math.min(1, value)) * 100).toFixed(2)}%`;

/**
 * Outlines boxes over an image. `layer` is positioned over `img` by CSS (.box-stage / .box-layer);
 * box coordinates are pixels of the original image (x1, y1, x2, y2), scaled here by its natural size,
 * or 0-1000 (`box_1000`, a GLM's own) when the pixels are missing. Returns the box elements.
 */
export function drawBoxes(layer, img, boxes, { width, height } = {}) {
  layer.replaceChildren();
  const w = width || img.naturalWidth;
  const h = height || img.naturalHeight;
  const out = [];
  for (const [index, box] of boxes.entries()) {
    let coords = box.box;
    let [sx, sy] = [w, h];
    if ((!coords || !w) && box.box_1000) [coords, sx, sy] = [box.box_1000, 1000, 1000];
    if (!coords || !sx || !sy) continue;
    const [x1, y1, x2, y2] = coords.map(Number);
    const node = make("span", `box ${box.kind || ""}`.trim(), null, { "data-index": String(index) });
    node.style.left = pct(x1 / sx);
    node.style.top = pct(y1 / sy);
    node.style.width = pct((x2 - x1) / sx);
    node.style.height = pct((y2 - y1) / sy);
    if (box.label) {
      const score = typeof box.score === "number" ? ` ${Math.round(box.score * 100)}%` : "";
      node.append(make("span", "box-label", `${box.label}${score}`));
      node.dataset.label = box.label;
    }
    layer.append(node);
    out.push(node);
  }
  layer.hidden = out.length === 0;
  return out;
}

export function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
