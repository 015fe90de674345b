// The Ask view's boxes: app.js announces the answer's metadata ("flashvl:answer", with `boxes`:
// detector boxes from the offline pipeline, a GLM's <|begin_of_box|> boxes with box_1000); this
// draws them over the preview with label and score, and links each box to the words of the answer
// that name it (hovering or focusing one highlights the other).
import { $, drawBoxes, make } from "./console-common.js";

const layer = $("ask-boxes");
const preview = $("preview");
const answer = $("answer");

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Wraps each mention of a box's label in the answer in a span linked to that box (text nodes only). */
function linkWords(boxes) {
  const text = answer.textContent;
  const labels = [...new Set(boxes.map((box) => box.label).filter(Boolean))].sort((a, b) => b.length - a.length);
  if (!text || !labels.length) return;
  const pattern = new RegExp(`(${labels.map(escapeRegExp).join("|")})(?:e?s)?`, "gi");
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    const label = labels.find((name) => name.toLowerCase() === match[1].toLowerCase());
    parts.push(document.createTextNode(text.slice(last, match.index)));
    parts.push(make("span", "box-word", match[0], { "data-label": label }));
    last = match.index + match[0].length;
  }
  if (!parts.length) return;
  parts.push(document.createTextNode(text.slice(last)));
  answer.replaceChildren(...parts);
}

function highlight(label, on) {
  for (const node of document.querySelectorAll("#ask-boxes .box, #answer .box-word")) {
    if (node.dataset.label === label) node.classList.toggle("hot", on);
  }
}

function draw(boxes) {
  const nodes = drawBoxes(layer, preview, boxes);
  for (const node of nodes) {
    node.tabIndex = 0;
    node.setAttribute("role", "img");
    node.setAttribute("aria-label", node.textContent);
  }
  linkWords(boxes);
}

let pending = null; // boxes that arrived before the preview had its natural size
document.addEventListener("flashvl:answer", (event) => {
  const boxes = Array.isArray(event.detail && event.detail.boxes) ? event.detail.boxes : [];
  if (!boxes.length) return;
  if (preview.naturalWidth) draw(boxes);
  else pending = boxes;
});
preview.addEventListener("load", () => {
  if (pending) draw(pending);
  pending = null;
});
document.addEventListener("flashvl:answer-reset", () => {
  pending = null;
  layer.replaceChildren();
  layer.hidden = true;
});

for (const type of ["mouseover", "focusin"]) {
  document.addEventListener(type, (event) => {
    const node = event.target.closest && event.target.closest("#ask-boxes .box, #answer .box-word");
    if (node) highlight(node.dataset.label, true);
  });
}
for (const type of ["mouseout", "focusout"]) {
  document.addEventListener(type, (event) => {
    const node = event.target.closest && event.target.closest("#ask-boxes .box, #answer .box-word");
    if (node) highlight(node.dataset.label, false);
  });
}
// A click on a box must not open the file picker of the drop zone around the preview.
layer.addEventListener("click", (event) => event.preventDefault());
