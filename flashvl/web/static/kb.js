// The "Knowledge" view: upload screenshots and PDFs to a collection, search it, open a hit (the page image
// with its matching lines outlined), ask with sources. textContent only (the page's CSP allows no inline
// script or style); page images are fetched with the API key and shown through blob: URLs on a canvas.
// An ES module: UI text in English and Chinese from console-common.js (server text is shown as it came).
import { t } from "./console-common.js";

(() => {
  const $ = (id) => document.getElementById(id);
  const kb = {
    collection: $("kb-collection"),
    files: $("kb-files"),
    upload: $("kb-upload"),
    uploadStatus: $("kb-upload-status"),
    query: $("kb-query"),
    search: $("kb-search"),
    results: $("kb-results"),
    viewer: $("kb-viewer"),
    canvas: $("kb-canvas"),
    viewerTitle: $("kb-viewer-title"),
    question: $("kb-question"),
    ask: $("kb-ask"),
    answer: $("kb-answer"),
    sources: $("kb-sources"),
    error: $("kb-error"),
  };

  function headers(extra) {
    const key = ($("api-key")?.value || "").trim();
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  function collectionPath() {
    return `kb/${encodeURIComponent(kb.collection.value.trim() || "default")}`;
  }

  function showError(message) {
    kb.error.textContent = message;
    kb.error.hidden = !message;
  }

  async function call(path, options) {
    const response = await fetch(path, options);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = body.error || {};
      throw new Error(`${error.code || response.status}: ${error.message || response.statusText}`);
    }
    return body;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A snippet with its highlighted spans as <mark> elements, built from text nodes (never HTML).
  function snippetNode(snippet, highlights) {
    const node = element("p", "kb-snippet");
    let at = 0;
    for (const [start, end] of highlights || []) {
      if (start > at) node.append(document.createTextNode(snippet.slice(at, start)));
      node.append(element("mark", "", snippet.slice(start, end)));
      at = end;
    }
    node.append(document.createTextNode(snippet.slice(at)));
    return node;
  }

  async function upload() {
    showError("");
    if (!kb.files.files.length) {
      showError(t("kb.nofiles"));
      return;
    }
    const form = new FormData();
    for (const file of kb.files.files) form.append("files", file, file.name);
    kb.upload.disabled = true;
    kb.uploadStatus.textContent = t("kb.indexing");
    try {
      const body = await call(`${collectionPath()}/documents`, { method: "POST", body: form, headers: headers({}) });
      kb.uploadStatus.textContent = body.documents
        .map((d) => {
          const pages = d.pages ? t(d.pages > 1 ? "kb.pages" : "kb.onepage", { count: d.pages }) : "";
          return `${d.document}: ${d.status}${pages ? ` (${pages})` : ""}`;
        })
        .join("; ");
    } catch (error) {
      kb.uploadStatus.textContent = "";
      showError(error.message);
    } finally {
      kb.upload.disabled = false;
    }
  }

  async function openHit(hit) {
    showError("");
    const path = `${collectionPath()}/documents/${hit.document_id}/pages/${hit.page}/image`;
    const response = await fetch(path, { headers: headers({}) });
    if (!response.ok) {
      showError(t("kb.pagenotloaded", { status: response.status }));
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const picture = new Image();
    picture.onload = () => {
      const canvas = kb.canvas;
      canvas.width = picture.naturalWidth;
      canvas.height = picture.naturalHeight;
      const context = canvas.getContext("2d");
      context.drawImage(picture, 0, 0);
      const scale = picture.naturalWidth / (hit.width || picture.naturalWidth);
      context.lineWidth = Math.max(2, 3 * scale);
      context.strokeStyle = "#e8590c";
      context.fillStyle = "rgba(255, 212, 59, 0.35)";
      for (const index of hit.matched_lines) {
        const [x1, y1, x2, y2] = hit.lines[index].box.map((v) => v * scale);
        context.fillRect(x1, y1, x2 - x1, y2 - y1);
        context.strokeRect(x1, y1, x2 - x1, y2 - y1);
      }
      canvas.dataset.highlighted = String(hit.matched_lines.length);
      URL.revokeObjectURL(url);
    };
    picture.src = url;
    kb.viewerTitle.textContent = t("kb.hit", { document: hit.document, page: hit.page });
    kb.viewer.hidden = false;
  }

  async function search() {
    showError("");
    kb.results.replaceChildren();
    const query = kb.query.value.trim();
    if (!query) return;
    try {
      const body = await call(`${collectionPath()}/search`, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ query, top_k: 5 }),
      });
      if (!body.results.length) kb.results.append(element("li", "hint", t("kb.nomatch")));
      for (const hit of body.results) {
        const item = element("li", "kb-hit");
        const open = element("button", "link-button kb-hit-title", t("kb.hit", { document: hit.document, page: hit.page }));
        open.type = "button";
        open.addEventListener("click", () => openHit(hit));
        item.append(open, element("span", "hint", ` ${t("kb.score", { score: hit.score.toFixed(3) })}`));
        item.append(snippetNode(hit.snippet, hit.highlights));
        kb.results.append(item);
      }
    } catch (error) {
      showError(error.message);
    }
  }

  async function ask() {
    showError("");
    kb.answer.textContent = "";
    kb.sources.replaceChildren();
    const question = kb.question.value.trim();
    if (!question) return;
    kb.ask.disabled = true;
    kb.answer.textContent = "…";
    try {
      const body = await call(`${collectionPath()}/ask`, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ question }),
      });
      kb.answer.textContent = body.text;
      kb.answer.dataset.answered = String(body.answered);
      for (const source of body.sources) {
        const item = element("li", "kb-source");
        item.append(element("strong", "", t("kb.hit", { document: source.document, page: source.page })));
        item.append(element("span", "hint", ` — ${source.snippet}`));
        kb.sources.append(item);
      }
    } catch (error) {
      kb.answer.textContent = "";
      showError(error.message);
    } finally {
      kb.ask.disabled = false;
    }
  }

  kb.upload.addEventListener("click", upload);
  kb.search.addEventListener("click", search);
  kb.query.addEventListener("keydown", (event) => {
    if (event.key === "Enter") search();
  });
  kb.ask.addEventListener("click", ask);
  kb.question.addEventListener("keydown", (event) => {
    if (event.key === "Enter") ask();
  });
})();
