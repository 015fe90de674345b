// flashvl web page: pick an image, ask a question, stream the answer from /v1/chat/completions.
// An ES module, no build step. Server text is only ever written with textContent. UI text in English and
// Chinese from console-common.js: setText(node, key, values) keeps a node translated when the language
// switches; server text (error messages, answers) is shown as it came.
import { onLanguage, setText, t } from "./console-common.js";

const MIME_BY_FORMAT = {
  JPEG: ["image/jpeg", "image/pjpeg"],
  PNG: ["image/png"],
  WEBP: ["image/webp"],
  GIF: ["image/gif"],
  BMP: ["image/bmp", "image/x-ms-bmp"],
  TIFF: ["image/tiff"],
  AVIF: ["image/avif"],
};

// Every element with an id, keyed by its camel-cased id: #file-input -> el.fileInput.
const el = {};
for (const node of document.querySelectorAll("[id]")) {
  el[node.id.replace(/-(\w)/g, (_, letter) => letter.toUpperCase())] = node;
}
el.form = el.askForm;

const state = {
  limits: null, // from GET /api/limits; null until loaded (the server checks again anyway)
  file: null,
  previewUrl: null,
  controller: null,
  meta: null, // [metadata, seconds] of the answer shown, for the stages panel
};
const IMAGE_CHANGED = "image-changed"; // abort reason: the answer in flight was about another image

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function formatSeconds(seconds) {
  return `${Number(seconds).toFixed(seconds < 10 ? 2 : 1)} s`;
}

// ---------- errors and status ----------

/** Server text as it came (`message`), or the page's own words: `[key, values]`. */
function showError(message, code) {
  if (Array.isArray(message)) setText(el.error, message[0], message[1] || {});
  else setText(el.error, null, {}, message);
  el.error.dataset.code = code || "";
  el.error.hidden = false;
}

function clearError() {
  setText(el.error, null);
  el.error.dataset.code = "";
  el.error.hidden = true;
}

/** A status line from a key (and values); none: empty. */
function setStatus(key, values = {}) {
  if (key) setText(el.status, key, values);
  else setText(el.status, null);
}

function setAnswerState(value) {
  el.answer.dataset.state = value;
  el.answer.setAttribute("aria-busy", value === "streaming" ? "true" : "false");
  const busy = value === "streaming";
  el.ask.disabled = busy;
  el.stop.disabled = !busy;
}

// ---------- API key (only when the server asks for one) ----------

const API_KEY_STORAGE = "flashvl.apiKey";
el.apiKey.value = sessionStorage.getItem(API_KEY_STORAGE) || "";
el.apiKey.addEventListener("change", () => {
  sessionStorage.setItem(API_KEY_STORAGE, el.apiKey.value.trim());
  loadLimits();
});

function authHeaders(headers) {
  const key = el.apiKey.value.trim();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

function askForKey() {
  el.apiKeyBox.open = true;
  el.apiKey.focus();
}

// ---------- limits ----------

async function loadLimits() {
  try {
    const response = await fetch("api/limits", { headers: authHeaders({ Accept: "application/json" }) });
    if (response.status === 401) askForKey();
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.limits = await response.json();
    const formats = (state.limits.allowed_formats || []).join(", ");
    const megapixels = (state.limits.max_image_pixels / 1e6).toFixed(0);
    setText(el.fileHint, "ask.limits", { formats, bytes: formatBytes(state.limits.max_image_bytes), megapixels });
    const mimes = (state.limits.allowed_formats || []).flatMap((f) => MIME_BY_FORMAT[f] || []);
    if (mimes.length) el.fileInput.accept = mimes.join(",");
  } catch (err) {
    setText(el.fileHint, "ask.anyformat");
  }
}

/** Quick client-side check; returns an error ([key, values]) or null. The server re-checks everything. */
function checkFileType(file) {
  if (file.type && !file.type.startsWith("image/")) {
    return ["ask.notimage", { name: file.name, type: file.type }];
  }
  if (!state.limits) return null;
  if (file.size > state.limits.max_image_bytes) {
    return ["ask.toobig", { size: formatBytes(file.size), limit: formatBytes(state.limits.max_image_bytes) }];
  }
  const allowed = state.limits.allowed_formats || [];
  const known = Object.entries(MIME_BY_FORMAT).find(([, mimes]) => mimes.includes(file.type));
  if (known && allowed.length && !allowed.includes(known[0])) {
    return ["ask.badformat", { format: known[0], allowed: allowed.join(", ") }];
  }
  return null;
}

function checkPixels(width, height) {
  if (!state.limits || !width || !height) return null;
  if (width * height > state.limits.max_image_pixels) {
    const megapixels = (state.limits.max_image_pixels / 1e6).toFixed(0);
    return ["ask.toomanypixels", { width, height, megapixels }];
  }
  return null;
}

// ---------- file selection and preview ----------

function clearFile() {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.file = null;
  state.previewUrl = null;
  el.fileInput.value = "";
  el.preview.removeAttribute("src");
  el.preview.hidden = true;
  el.previewFallback.hidden = true;
  el.dropEmpty.hidden = false;
  el.fileMeta.hidden = true;
  el.dropzone.classList.remove("has-file");
}

/** A new image (or none): the answer on screen, or still coming, was about the old one. */
function clearAnswer() {
  if (state.controller) state.controller.abort(IMAGE_CHANGED);
  state.controller = null;
  resetAnswer();
  setAnswerState("idle");
  setStatus(null);
  setText(el.answerPlaceholder, "ask.answerhint");
  el.answerPlaceholder.hidden = false;
}

function useFile(file) {
  clearAnswer();
  clearFile();
  if (!file) return;
  const problem = checkFileType(file);
  if (problem) {
    showError(problem, "client_check");
    return;
  }
  state.file = file;
  state.previewUrl = URL.createObjectURL(file);
  el.dropEmpty.hidden = true;
  el.dropzone.classList.add("has-file");
  el.fileMeta.hidden = false;
  el.fileInfo.textContent = `${file.name} · ${formatBytes(file.size)}`;
  el.preview.src = state.previewUrl;
  el.preview.hidden = false;
}

el.preview.addEventListener("load", () => {
  if (!state.file) return;
  const { naturalWidth: width, naturalHeight: height } = el.preview;
  el.fileInfo.textContent = `${state.file.name} · ${width}×${height} · ${formatBytes(state.file.size)}`;
  const problem = checkPixels(width, height);
  if (problem) {
    clearFile();
    showError(problem, "client_check");
  }
});

// A file the browser cannot decode may still be something the server handles (or rejects with a
// clear message), so it stays selected.
el.preview.addEventListener("error", () => {
  if (!state.file || !el.preview.getAttribute("src")) return;
  el.preview.hidden = true;
  el.previewFallback.hidden = false;
});

el.fileInput.addEventListener("change", () => useFile(el.fileInput.files[0]));
el.clearFile.addEventListener("click", () => {
  clearAnswer();
  clearFile();
  el.fileInput.focus();
});

["dragenter", "dragover"].forEach((type) =>
  el.dropzone.addEventListener(type, (event) => {
    event.preventDefault();
    el.dropzone.classList.add("dragging");
  }),
);
["dragleave", "dragend"].forEach((type) =>
  el.dropzone.addEventListener(type, () => el.dropzone.classList.remove("dragging")),
);
el.dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  el.dropzone.classList.remove("dragging");
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) useFile(file);
});
// Dropping a file elsewhere on the page must not navigate away from it.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

document.addEventListener("paste", (event) => {
  const items = event.clipboardData ? Array.from(event.clipboardData.files) : [];
  const image = items.find((file) => file.type.startsWith("image/"));
  if (image) {
    event.preventDefault();
    useFile(image);
  }
});

// ---------- question ----------

el.question.addEventListener("keydown", (event) => {
  // isComposing: Enter that confirms an IME candidate (Chinese, Japanese…) must not submit.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    el.form.requestSubmit();
  }
});

document.querySelectorAll(".chip").forEach((chip) =>
  chip.addEventListener("click", () => {
    el.question.value = chip.textContent;
    el.question.focus();
  }),
);

// ---------- rendering the answer ----------

/** On a small screen the answer card sits below the form: bring it into view when asking. */
function showAnswerCard() {
  const top = el.answerCard.getBoundingClientRect().top;
  if (top >= 0 && top < window.innerHeight * 0.6) return; // already in view (e.g. side by side)
  const calm = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  el.answerCard.scrollIntoView({ behavior: calm ? "auto" : "smooth", block: "start" });
}

function resetAnswer() {
  clearError();
  state.meta = null;
  document.dispatchEvent(new CustomEvent("flashvl:answer-reset"));
  el.answer.textContent = "";
  el.thinkingText.textContent = "";
  el.thinking.hidden = true;
  el.thinking.open = false;
  el.stages.hidden = true;
  el.stageList.replaceChildren();
  el.stageSummary.replaceChildren();
  el.stageNotice.hidden = true;
  el.stageNote.hidden = true;
  el.answerPlaceholder.hidden = true;
}

/** Creates an element whose text is set with textContent (server text is never parsed as HTML). */
function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = text;
  return node;
}

/** A term and its value; each is a key ([key, values]) of the page's words, or server text. */
function appendSummary(term, value) {
  const [dt, dd] = [make("dt", "", ""), make("dd", "", "")];
  for (const [node, text] of [[dt, term], [dd, value]]) {
    if (Array.isArray(text)) setText(node, text[0], text[1] || {});
    else node.textContent = text;
  }
  el.stageSummary.append(dt, dd);
}

function renderStages(meta, wallSeconds) {
  state.meta = [meta, wallSeconds]; // drawn again in the other language when it switches
  const stages = Array.isArray(meta.stages) ? meta.stages : [];
  el.stageList.replaceChildren();
  let total = 0;
  for (const stage of stages) {
    const timed = typeof stage.seconds === "number";
    const item = make("li", "stage", "");
    item.append(
      make("span", "stage-name", stage.name),
      make("code", "stage-backend", stage.backend),
      make("span", "stage-time", timed ? formatSeconds(stage.seconds) : "–"),
    );
    if (stage.cached) item.append(make("span", "badge", t("ask.cached")));
    el.stageList.append(item);
    if (timed) total += stage.seconds;
  }
  el.stageSummary.replaceChildren();
  appendSummary(["ask.total"], ["ask.totalvalue", { stages: formatSeconds(total), wall: formatSeconds(wallSeconds) }]);
  appendSummary(["ask.route"], meta.route || "–");
  appendSummary(
    ["ask.confidence"],
    typeof meta.confidence === "number" ? `${Math.round(meta.confidence * 100)}%` : ["ask.notreported"],
  );
  if (meta.request_id) appendSummary(["ask.request"], meta.request_id);
  el.stageNotice.textContent = meta.notice || "";
  el.stageNotice.hidden = !meta.notice;
  if (meta.vision_stage === "offline-pipeline") {
    setText(el.stageNote, meta.language_stage ? "ask.offlinelm" : "ask.offline");
    el.stageNote.hidden = false;
  }
  el.stages.hidden = false;
}

function errorMessage(payload, fallback) {
  const error = payload && payload.error;
  if (error && typeof error === "object") return [error.message || fallback, error.code || ""];
  if (typeof error === "string") return [error, ""];
  return [fallback, ""];
}

// ---------- request and SSE stream ----------

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** Yields the data payload of each server-sent event in the response body. */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split(/\r?\n\r?\n|\r\r/);
    buffer = events.pop();
    for (const event of events) {
      const data = event
        .split(/\r?\n|\r/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""));
      if (data.length) yield data.join("\n");
    }
  }
}

async function ask() {
  const question = el.question.value.trim();
  if (!state.file) {
    showError(["ask.noimage"], "client_check");
    el.fileInput.focus();
    return;
  }
  if (!question) {
    showError(["ask.noquestion"], "client_check");
    el.question.focus();
    return;
  }
  resetAnswer();
  setAnswerState("streaming");
  setStatus("ask.reading");
  showAnswerCard();
  const controller = new AbortController();
  state.controller = controller;
  const started = performance.now();
  let finished = false;
  let failed = false;
  let stopped = false;
  try {
    const dataUrl = await readAsDataUrl(state.file);
    setStatus("ask.looking");
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      signal: controller.signal,
      body: JSON.stringify({
        model: "flashvl",
        stream: true,
        logprobs: true, // the stages panel shows the answer's confidence
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: question },
              { type: "image_url", image_url: { url: dataUrl } },
            ],
          },
        ],
      }),
    });
    if (!response.ok) {
      if (response.status === 401) askForKey();
      const payload = await response.json().catch(() => null);
      const [message, code] = errorMessage(payload, ["ask.httpstatus", { status: response.status }]);
      showError(message, code);
      failed = true;
      return;
    }
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") {
        finished = true;
        break;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        continue; // not a JSON chunk (e.g. a keep-alive); nothing to show
      }
      if (chunk.error) {
        const [message, code] = errorMessage(chunk, ["ask.servererror"]);
        showError(message, code);
        failed = true;
        continue;
      }
      const delta = (chunk.choices && chunk.choices[0] && chunk.choices[0].delta) || {};
      if (delta.reasoning_content) {
        el.thinkingText.textContent += delta.reasoning_content;
        el.thinking.hidden = false;
      }
      if (delta.content) {
        el.answer.textContent += delta.content;
        setStatus("ask.writing");
      }
      if (chunk.flashvl) {
        renderStages(chunk.flashvl, (performance.now() - started) / 1000);
        // console-ask.js draws the boxes over the preview and links them to the answer's words.
        document.dispatchEvent(new CustomEvent("flashvl:answer", { detail: chunk.flashvl }));
      }
    }
    if (!finished && !failed) {
      showError(["ask.incomplete"], "stream_incomplete");
      failed = true;
    }
  } catch (err) {
    if (controller.signal.reason === IMAGE_CHANGED) return; // clearAnswer() has reset the card
    if (err.name === "AbortError") {
      setStatus("ask.stopped");
      finished = true;
      stopped = true;
    } else {
      showError(["ask.network", { error: err.message }], "network");
      failed = true;
    }
  } finally {
    if (controller.signal.reason !== IMAGE_CHANGED) finish();
  }

  function finish() {
    state.controller = null;
    setAnswerState(failed ? "error" : "done");
    if (!failed && !stopped) {
      setStatus("ask.done", { time: formatSeconds((performance.now() - started) / 1000) });
    } else if (failed) {
      setStatus(null);
    }
    if (!el.answer.textContent && !failed) {
      setText(el.answerPlaceholder, "ask.noanswer");
      el.answerPlaceholder.hidden = false;
    }
  }
}

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.controller) ask();
});

el.stop.addEventListener("click", () => {
  if (state.controller) state.controller.abort();
});

// The stages panel is built from the answer's metadata: drawn again in the new language.
onLanguage(() => {
  if (state.meta && !el.stages.hidden) renderStages(...state.meta);
});

loadLimits();

