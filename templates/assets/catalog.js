// hpc-mirror catalog: the filter box and copy buttons. No dependencies, works from file://.
"use strict";

function setupFilter(input) {
  const scope = document.querySelector(input.dataset.filter);
  const rows = Array.from(scope.querySelectorAll("tr[data-search]"));
  const groups = Array.from(scope.querySelectorAll("[data-group]"));
  const count = document.getElementById("filter-count");
  const none = document.getElementById("no-match");
  const apply = () => {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const row of rows) {
      const match = words.every((w) => row.dataset.search.includes(w));
      row.hidden = !match;
      if (match) shown += 1;
    }
    for (const group of groups) {
      group.hidden = !group.querySelector("tr[data-search]:not([hidden])");
    }
    if (count) count.textContent = words.length ? `${shown} of ${rows.length}` : "";
    if (none) none.hidden = shown !== 0;
  };
  input.addEventListener("input", apply);
  apply();
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // file:// and plain-HTTP pages have no async clipboard: fall back to a selection.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "absolute";
  area.style.left = "-9999px";
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

function setupCopy(button) {
  button.addEventListener("click", async () => {
    try {
      await copyText(button.dataset.copy);
      button.textContent = "Copied";
      button.classList.add("done");
    } catch (error) {
      button.textContent = "Select and copy";
    }
    setTimeout(() => { button.textContent = "Copy"; button.classList.remove("done"); }, 1500);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("input[data-filter]").forEach(setupFilter);
  document.querySelectorAll("button[data-copy]").forEach(setupCopy);
});
