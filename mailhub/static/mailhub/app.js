// mailhub staff pages: small progressive enhancements; every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // The view selector is a <details> menu: close it on a click elsewhere or on Escape.
  for (const menu of document.querySelectorAll("details[data-menu]")) {
    document.addEventListener("click", (event) => {
      if (menu.open && !menu.contains(event.target)) menu.open = false;
    });
    menu.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        menu.open = false;
        menu.querySelector("summary").focus();
      }
    });
  }

  // Filters apply as soon as a select, checkbox or date changes.
  for (const form of document.querySelectorAll("form[data-autosubmit]")) {
    form.addEventListener("change", (event) => {
      if (event.target.matches("select, input[type=checkbox], input[type=date]")) form.requestSubmit();
    });
  }

  // "/" focuses the search box, as in most mail clients.
  const search = document.querySelector("input[data-search]");
  if (search) {
    document.addEventListener("keydown", (event) => {
      const typing = event.target.closest("input, textarea, select, [contenteditable]");
      if (event.key === "/" && !typing) {
        event.preventDefault();
        search.focus();
      }
    });
  }
});
