// Every upload form: a busy button and no second submit; on the upload forms, paste
// from the clipboard, drag and drop, and a camera shortcut on touch screens.
(function () {
  "use strict";

  function markBusy(form) {
    form.dataset.busy = "true";
    form.setAttribute("aria-busy", "true");
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      button.dataset.label = button.dataset.label || button.textContent;
      button.textContent = form.dataset.busyText || "Working…";
      button.setAttribute("aria-disabled", "true");
    });
  }

  function clearBusy(form) {
    delete form.dataset.busy;
    form.removeAttribute("aria-busy");
    form.querySelectorAll("button[type=submit]").forEach(function (button) {
      if (button.dataset.label) button.textContent = button.dataset.label;
      button.removeAttribute("aria-disabled");
    });
  }

  // A second submit while the first is under way is ignored (a double click sent two POSTs).
  // Capture phase: this runs before draw.js's own submit handler.
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form.dataset.busy) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
  window.digitsForms = { markBusy: markBusy };

  document.querySelectorAll("form.upload-form").forEach(function (form) {
    form.addEventListener("submit", function () { markBusy(form); });
    const input = form.querySelector("input[type=file][name=file]");

    function useFile(file) {
      const files = new DataTransfer();
      files.items.add(file);
      input.files = files.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }

    form.querySelectorAll("[data-drop-hint]").forEach(function (hint) { hint.hidden = false; });
    const camera = form.querySelector("[data-camera]");
    if (camera && window.matchMedia("(pointer: coarse)").matches) {
      camera.hidden = false;
      camera.querySelector("input").addEventListener("change", function (event) {
        if (event.target.files.length) {
          useFile(event.target.files[0]);
          form.requestSubmit();
        }
      });
    }
    const zone = form.closest("section") || form;
    zone.addEventListener("dragover", function (event) {
      event.preventDefault();
      zone.classList.add("dropping");
    });
    zone.addEventListener("dragleave", function () { zone.classList.remove("dropping"); });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("dropping");
      const file = event.dataTransfer.files[0];
      if (file) useFile(file);
    });
    document.addEventListener("paste", function (event) {
      const item = [...(event.clipboardData || { items: [] }).items].find(function (entry) {
        return entry.kind === "file" && entry.type.startsWith("image/");
      });
      if (item) {
        event.preventDefault();
        useFile(item.getAsFile());
      }
    });
  });

  // Back to a page left while busy (the browser's back-forward cache): usable again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-busy]").forEach(clearBusy);
  });
})();
