// The page's views: every element with data-view="NAME" (and data-view-label[-zh]) becomes a tab
// panel; the tab list is built from them in page order, so a new view needs only its markup. The
// view in the URL's hash (#review) is opened on load, so a reload keeps it. Each view's behaviour
// lives in its own module.
import { $, lang, onLanguage, setLanguage } from "./console-common.js";
import "./console-ask.js";
import "./console-review.js";
import "./console-moderate.js";
import "./console-documents.js";
import "./console-jobs.js";

const panels = Array.from(document.querySelectorAll("[data-view]"));
const tablist = $("view-tabs");
const tabs = panels.map((panel) => {
  const name = panel.dataset.view;
  if (!panel.id) panel.id = `${name}-view`;
  const tab = document.createElement("button");
  tab.type = "button";
  tab.id = `view-tab-${name}`;
  tab.className = "view-tab";
  tab.setAttribute("role", "tab");
  tab.setAttribute("aria-controls", panel.id);
  tab.dataset.tab = name;
  panel.setAttribute("role", "tabpanel");
  panel.setAttribute("aria-labelledby", tab.id);
  tab.addEventListener("click", () => show(name, true));
  tablist.append(tab);
  return tab;
});

function label() {
  for (const [index, tab] of tabs.entries()) {
    const panel = panels[index];
    tab.textContent = (lang === "zh" && panel.dataset.viewLabelZh) || panel.dataset.viewLabel || panel.dataset.view;
  }
}

function show(name, focus = false) {
  const known = panels.some((panel) => panel.dataset.view === name);
  const wanted = known ? name : panels[0].dataset.view;
  panels.forEach((panel, index) => {
    const active = panel.dataset.view === wanted;
    panel.hidden = !active;
    tabs[index].setAttribute("aria-selected", String(active));
    tabs[index].tabIndex = active ? 0 : -1;
    if (active && focus) tabs[index].focus();
  });
  if (location.hash.slice(1) !== wanted) history.replaceState(null, "", `#${wanted}`);
  document.dispatchEvent(new CustomEvent("flashvl:view", { detail: wanted }));
}

// Arrow keys move between tabs (the ARIA tabs pattern); Home/End jump to the ends.
tablist.addEventListener("keydown", (event) => {
  const index = tabs.indexOf(document.activeElement);
  if (index < 0) return;
  const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  show(tabs[(moves[event.key] + tabs.length) % tabs.length].dataset.tab, true);
});
window.addEventListener("hashchange", () => show(location.hash.slice(1)));

const picker = $("ui-lang");
picker.value = lang;
picker.addEventListener("change", () => setLanguage(picker.value));
onLanguage(label);
setLanguage(lang);
show(location.hash.slice(1));
