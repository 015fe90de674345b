// The Documents view: /ocr lines in reading order with their boxes on the image, rebuilt tables shown
// as tables (copy as Markdown or CSV), and key fields by /document/extract under a schema the user
// types or starts from an example.
import { $, api, drawBoxes, make, readAsDataUrl, showError, t } from "./console-common.js";

const EXAMPLES = {
  invoice: {
    type: "object",
    properties: {
      invoice_number: { type: "string" },
      date: { type: "string" },
      seller: { type: "string" },
      total: { type: "string" },
    },
  },
  receipt: {
    type: "object",
    properties: { store: { type: "string" }, date: { type: "string" }, total: { type: "string" } },
  },
  id_card: {
    type: "object",
    properties: {
      name: { type: "string" },
      id_number_masked: { type: "string", description: "the ID number with all but the first 3 and last 2 characters as *" },
    },
  },
};

const doc = { file: null, url: null };

function setSchema() {
  $("doc-schema").value = JSON.stringify(EXAMPLES[$("doc-example").value], null, 2);
}

function renderTable(table, index) {
  const wrap = make("figure", "doc-table");
  wrap.append(make("figcaption", "", t("documents.table", { n: index + 1 })));
  const grid = make("table", "");
  const rows = table.rows || [];
  rows.forEach((row, r) => {
    const tr = make("tr", "");
    for (const cell of row) tr.append(make(r === 0 ? "th" : "td", "", cell));
    grid.append(tr);
  });
  const scroll = make("div", "table-scroll");
  scroll.append(grid);
  const actions = make("div", "console-row");
  const status = make("span", "status", "", { role: "status" });
  for (const [key, text] of [["copymd", table.markdown], ["copycsv", table.csv]]) {
    const button = make("button", `secondary doc-${key}`, t(`documents.${key}`), { type: "button" });
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(text || "");
        status.textContent = t("documents.copied");
      } catch (err) {
        status.textContent = err.message;
      }
    });
    actions.append(button);
  }
  actions.append(status);
  wrap.append(scroll, actions);
  return wrap;
}

function render(result) {
  const lines = result.lines || [];
  const img = $("doc-image");
  const draw = () => {
    const nodes = drawBoxes($("doc-boxes"), img, lines.map((line) => ({ box: line.box })), result.image || {});
    nodes.forEach((node, index) => (node.dataset.line = String(index)));
  };
  if (img.complete && img.naturalWidth) draw();
  else img.addEventListener("load", draw, { once: true });
  $("doc-lines").replaceChildren(
    ...lines.map((line, index) => make("li", "doc-line", line.text, { "data-line": String(index), tabindex: "0" })),
  );
  $("doc-tables").replaceChildren(...(result.tables || []).map(renderTable));
}

function hot(index, on) {
  for (const node of document.querySelectorAll(`#documents-view [data-line="${index}"]`)) node.classList.toggle("hot", on);
}
for (const [type, on] of [["mouseover", true], ["mouseout", false], ["focusin", true], ["focusout", false]]) {
  $("doc-lines").addEventListener(type, (event) => {
    const line = event.target.closest(".doc-line");
    if (line) hot(line.dataset.line, on);
  });
}

$("doc-file").addEventListener("change", (event) => {
  doc.file = event.target.files[0] || null;
  if (doc.url) URL.revokeObjectURL(doc.url);
  doc.url = doc.file ? URL.createObjectURL(doc.file) : null;
  const img = $("doc-image");
  $("doc-boxes").replaceChildren();
  $("doc-lines").replaceChildren();
  $("doc-tables").replaceChildren();
  $("doc-fields").textContent = "";
  if (doc.url) img.src = doc.url;
  img.hidden = !doc.url;
});

$("doc-read").addEventListener("click", async () => {
  if (!doc.file) return showError($("doc-error"), new Error(t("documents.noimage")));
  showError($("doc-error"), null);
  $("doc-status").textContent = t("documents.reading");
  const form = new FormData();
  form.append("file", doc.file, doc.file.name);
  try {
    render(await api("ocr", { method: "POST", body: form }));
    $("doc-status").textContent = "";
  } catch (err) {
    $("doc-status").textContent = "";
    showError($("doc-error"), err);
  }
});

$("doc-extract").addEventListener("click", async () => {
  if (!doc.file) return showError($("doc-error"), new Error(t("documents.noimage")));
  let schema;
  try {
    schema = JSON.parse($("doc-schema").value);
  } catch (err) {
    return showError($("doc-error"), new Error(t("documents.badschema", { error: err.message })));
  }
  showError($("doc-error"), null);
  $("doc-status").textContent = t("documents.reading");
  try {
    const result = await api("document/extract", {
      method: "POST",
      json: { image_base64: await readAsDataUrl(doc.file), schema },
    });
    $("doc-fields").textContent = JSON.stringify(
      { fields: result.fields ?? result.data ?? result, grounded: result.grounded },
      null,
      2,
    );
    if (!$("doc-lines").children.length) render(result);
  } catch (err) {
    showError($("doc-error"), err);
  } finally {
    $("doc-status").textContent = "";
  }
});

$("doc-example").addEventListener("change", setSchema);
setSchema();
