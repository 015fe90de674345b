// Shared by the console views (console-*.js): the API call with the page's key, safe element
// building (server text only ever via textContent), boxes over an image, and the UI language.

const STRINGS = {
  en: {
    language: "Language", refresh: "Refresh", prev: "Previous", next: "Next",
    views: "Views", "apikey.summary": "API key", "apikey.label": "API key",
    "apikey.hint": "Only if this server asks for one. Kept in this tab only (sessionStorage) and sent as", "apikey.hintend": ".",
    "ask.doctitle": "flashvl · ask about an image", "ask.tagline": "Ask a question about an image. Runs on this server, offline.",
    "ask.image": "1 · Image", "ask.choose": "Choose an image", "ask.drop": "Choose an image, drop it here, or paste it",
    "ask.limitsloading": "Checking the server's limits…", "ask.limits": "{formats} · up to {bytes}, {megapixels} MP",
    "ask.anyformat": "Any common image format.", "ask.previewalt": "Preview of the chosen image",
    "ask.nopreview": "No preview for this file; the server will check it.", "ask.remove": "Remove",
    "ask.question": "2 · Question", "ask.questionplaceholder": "Ask anything about the image…",
    "ask.enterhint": "Enter sends, Shift+Enter adds a new line.", "ask.examples": "Example questions",
    "ask.ask": "Ask", "ask.stop": "Stop", "ask.answer": "Answer", "ask.thinking": "Thinking",
    "ask.answerhint": "The answer appears here as it is written.", "ask.noanswer": "No answer text was returned.",
    "ask.stagesaria": "How this answer was made", "ask.stages": "Stages", "ask.cached": "cached",
    "ask.total": "Total", "ask.totalvalue": "{stages} in stages · {wall} round trip", "ask.route": "Route",
    "ask.confidence": "Confidence", "ask.notreported": "not reported", "ask.request": "Request",
    "ask.offline": "The vision stage is an offline pipeline (OCR, detectors, classifiers), not a vision-language model.",
    "ask.offlinelm": "The vision stage is an offline pipeline (OCR, detectors, classifiers), not a vision-language model; the language model writes the answer from its findings.",
    "ask.reading": "Reading the image…", "ask.looking": "Looking at the image…", "ask.writing": "Writing…",
    "ask.stopped": "Stopped.", "ask.done": "Done in {time}.", "ask.noimage": "Choose an image first.",
    "ask.noquestion": "Type a question first.", "ask.notimage": "“{name}” is not an image ({type}).",
    "ask.toobig": "This image is {size}; the limit is {limit}.", "ask.badformat": "{format} images are not accepted here; use {allowed}.",
    "ask.toomanypixels": "This image is {width}×{height} pixels; the limit is {megapixels} megapixels.",
    "ask.httpstatus": "The server answered {status}.", "ask.servererror": "The server reported an error.",
    "ask.incomplete": "The connection closed before the answer was complete.", "ask.network": "Could not reach the server: {error}",
    "review.title": "Review queue", "review.hint": "Answers that arbitration flagged for a person. Needs the review scope.",
    "review.status": "Status", "review.open": "Open", "review.resolved": "Resolved", "review.all": "All",
    "review.reason": "Reason contains", "review.empty": "Nothing in the queue.", "review.question": "Question",
    "review.answer": "Answer", "review.vision": "Vision stage saw", "review.reasons": "Why it was flagged",
    "review.accept": "Accept", "review.reject": "Reject", "review.correct": "Correct…", "review.save": "Save correction",
    "review.corrected": "Corrected answer", "review.noimage": "no thumbnail kept",
    "review.thumbalt": "The flagged image (thumbnail)",
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
    "kb.title": "Knowledge", "kb.hint": "Index screenshots and PDFs into a collection, search them, and ask with sources.",
    "kb.collection": "Collection", "kb.files": "Images or PDFs to index", "kb.upload": "Upload",
    "kb.queryplaceholder": "Search, e.g. VPN server / 报销流程", "kb.query": "Search the collection", "kb.search": "Search",
    "kb.results": "Search results", "kb.canvas": "The page, with the matching lines outlined",
    "kb.questionplaceholder": "Ask the collection a question", "kb.question": "Question for the collection", "kb.ask": "Ask",
    "kb.sources": "Sources", "kb.nofiles": "Choose one or more images or PDFs first.", "kb.indexing": "Indexing…",
    "kb.pages": "{count} pages", "kb.onepage": "1 page", "kb.pagenotloaded": "The page image could not be loaded ({status}).",
    "kb.hit": "{document} · page {page}", "kb.nomatch": "No page matches.", "kb.score": "score {score}",
    verdict: "Verdict", unauthorized: "This needs an API key with the right scope: enter it under “API key”.",
  },
  zh: {
    language: "语言", refresh: "刷新", prev: "上一页", next: "下一页",
    views: "视图", "apikey.summary": "API key", "apikey.label": "API key",
    "apikey.hint": "仅当服务器要求时填写。只保存在此标签页(sessionStorage)中,发送方式为", "apikey.hintend": "。",
    "ask.doctitle": "flashvl · 看图提问", "ask.tagline": "就一张图片提问。在本服务器上离线运行。",
    "ask.image": "1 · 图片", "ask.choose": "选择图片", "ask.drop": "选择图片、拖到这里或直接粘贴",
    "ask.limitsloading": "正在查询服务器的限制…", "ask.limits": "{formats} · 最大 {bytes},{megapixels} 百万像素",
    "ask.anyformat": "常见图片格式均可。", "ask.previewalt": "所选图片的预览",
    "ask.nopreview": "此文件无法预览;服务器会检查它。", "ask.remove": "移除",
    "ask.question": "2 · 问题", "ask.questionplaceholder": "关于这张图片,问什么都可以…",
    "ask.enterhint": "回车发送,Shift+回车换行。", "ask.examples": "示例问题",
    "ask.ask": "提问", "ask.stop": "停止", "ask.answer": "回答", "ask.thinking": "思考过程",
    "ask.answerhint": "回答生成时会显示在这里。", "ask.noanswer": "没有返回回答文本。",
    "ask.stagesaria": "这个回答是怎样得出的", "ask.stages": "处理阶段", "ask.cached": "缓存",
    "ask.total": "合计", "ask.totalvalue": "各阶段 {stages} · 往返 {wall}", "ask.route": "路径",
    "ask.confidence": "置信度", "ask.notreported": "未报告", "ask.request": "请求",
    "ask.offline": "视觉阶段是离线流水线(OCR、检测器、分类器),不是视觉语言模型。",
    "ask.offlinelm": "视觉阶段是离线流水线(OCR、检测器、分类器),不是视觉语言模型;语言模型根据它的发现写出回答。",
    "ask.reading": "正在读取图片…", "ask.looking": "正在看图…", "ask.writing": "正在作答…",
    "ask.stopped": "已停止。", "ask.done": "已完成,用时 {time}。", "ask.noimage": "请先选择图片。",
    "ask.noquestion": "请先输入问题。", "ask.notimage": "“{name}”不是图片({type})。",
    "ask.toobig": "这张图片大小为 {size},上限是 {limit}。", "ask.badformat": "这里不接受 {format} 图片;请使用 {allowed}。",
    "ask.toomanypixels": "这张图片为 {width}×{height} 像素,上限是 {megapixels} 百万像素。",
    "ask.httpstatus": "服务器返回了 {status}。", "ask.servererror": "服务器报告了错误。",
    "ask.incomplete": "回答完成之前连接已断开。", "ask.network": "无法连接服务器:{error}",
    "review.title": "人工审核队列", "review.hint": "仲裁标记为需要人工审核的回答。需要 review 权限。",
    "review.status": "状态", "review.open": "待处理", "review.resolved": "已处理", "review.all": "全部",
    "review.reason": "原因包含", "review.empty": "队列为空。", "review.question": "问题", "review.answer": "回答",
    "review.vision": "视觉阶段所见", "review.reasons": "标记原因", "review.accept": "通过", "review.reject": "驳回",
    "review.correct": "更正…", "review.save": "保存更正", "review.corrected": "更正后的回答",
    "review.noimage": "未保存缩略图", "review.thumbalt": "被标记的图片(缩略图)", "review.page": "第 {from}–{to} 条,共 {count} 条",
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
    "kb.title": "知识库", "kb.hint": "把截图和 PDF 建入一个集合,搜索它们,并带出处地提问。",
    "kb.collection": "集合", "kb.files": "要建索引的图片或 PDF", "kb.upload": "上传",
    "kb.queryplaceholder": "搜索,例如 VPN 服务器 / 报销流程", "kb.query": "在集合中搜索", "kb.search": "搜索",
    "kb.results": "搜索结果", "kb.canvas": "该页面,匹配的行已框出",
    "kb.questionplaceholder": "向这个集合提问", "kb.question": "向集合提的问题", "kb.ask": "提问",
    "kb.sources": "出处", "kb.nofiles": "请先选择一个或多个图片或 PDF。", "kb.indexing": "正在建立索引…",
    "kb.pages": "{count} 页", "kb.onepage": "1 页", "kb.pagenotloaded": "无法加载该页面图片({status})。",
    "kb.hit": "{document} · 第 {page} 页", "kb.nomatch": "没有匹配的页面。", "kb.score": "得分 {score}",
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

// Attributes translated like text: data-i18n-placeholder="key" sets placeholder="…", and so on.
const I18N_ATTRIBUTES = ["placeholder", "aria-label", "alt", "title"];

function translateNode(node) {
  let values = {};
  try {
    values = JSON.parse(node.dataset.i18nArgs || "{}");
  } catch {
    // a malformed argument list: the text without values
  }
  node.textContent = t(node.dataset.i18n, values);
}

/**
 * Sets a node's text from a key (and values), and marks it so that a language switch rewrites it.
 * `key` null: `text` is shown as it is (server text), and the node is no longer translated.
 */
export function setText(node, key, values = {}, text = "") {
  if (key) {
    node.dataset.i18n = key;
    if (Object.keys(values).length) node.dataset.i18nArgs = JSON.stringify(values);
    else delete node.dataset.i18nArgs;
    translateNode(node);
  } else {
    delete node.dataset.i18n;
    delete node.dataset.i18nArgs;
    node.textContent = text;
  }
}

/** Sets the UI language, rewrites every [data-i18n] text and attribute, and tells the views (they re-render). */
export function setLanguage(value) {
  lang = value === "zh" ? "zh" : "en";
  localStorage.setItem(LANG_STORAGE, lang);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) translateNode(node);
  for (const name of I18N_ATTRIBUTES) {
    for (const node of document.querySelectorAll(`[data-i18n-${name}]`)) {
      node.setAttribute(name, t(node.getAttribute(`data-i18n-${name}`)));
    }
  }
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
