// The drawing canvases (one digit on the home page, a number in number mode): pointer
// events cover mouse, touch and pen alike. Each time the pen lifts, the drawing is
// sent to the JSON API (debounced, at most one request in flight) and the answer is
// shown in place, in an aria-live region; an answer for a drawing that has changed
// since it was sent is dropped. The form's submit button stays the route without
// JavaScript answers: it puts the PNG in the form's file field and submits the form
// (busy from then on: forms.js), and the drawing is kept for the way back.
(function () {
  "use strict";
  const DEBOUNCE_MS = 250;

  function setUp(section) {
    const canvas = section.querySelector(".draw-canvas");
    const form = section.querySelector(".draw-form");
    const fileInput = section.querySelector(".draw-file");
    const message = section.querySelector(".draw-message");
    const live = section.querySelector(".live-answer");
    const context = canvas.getContext("2d");
    const noun = section.dataset.liveKind === "number" ? "number" : "digit";
    const savedKey = "digits-drawing-" + noun;
    let drawing = false;
    let hasInk = false;
    let last = null;
    let version = 0; // bumped by every change to the drawing
    let timer = null;
    let inFlight = false;

    function clear() {
      context.fillStyle = "#fff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      hasInk = false;
      version += 1;
      clearTimeout(timer);
      message.textContent = "";
      live.replaceChildren();
      live.removeAttribute("aria-busy");
    }

    function point(event) {
      const box = canvas.getBoundingClientRect();
      return {
        x: (event.clientX - box.left) * (canvas.width / box.width),
        y: (event.clientY - box.top) * (canvas.height / box.height),
      };
    }

    function stroke(from, to) {
      context.strokeStyle = "#000";
      context.lineWidth = 18;
      context.lineCap = "round";
      context.lineJoin = "round";
      context.beginPath();
      context.moveTo(from.x, from.y);
      context.lineTo(to.x, to.y);
      context.stroke();
      hasInk = true;
    }

    function element(tag, text, attributes) {
      const node = document.createElement(tag);
      if (text !== undefined) node.textContent = text;
      Object.entries(attributes || {}).forEach(function ([name, value]) { node.setAttribute(name, value); });
      return node;
    }

    function bars(probabilities, best, label) {
      const list = element("ol", undefined, { class: "live-bars", "aria-label": label });
      probabilities.forEach(function (p, digit) {
        const item = element("li", undefined, digit === best ? { class: "best" } : {});
        item.append(element("span", String(digit)),
          element("meter", undefined, { min: "0", max: "1", value: String(p), "aria-label": "digit " + digit }));
        list.append(item);
      });
      return list;
    }

    function show(answer) {
      const percent = function (p) { return (p * 100).toFixed(1) + "%"; };
      const value = noun === "number" ? answer.number : String(answer.prediction);
      const heading = element("p", noun === "number" ? "It reads " : "It looks like a ");
      heading.append(element("strong", value, { class: "digit", "data-testid": "live-value" }),
        " (" + percent(answer.confidence) + " sure)");
      if (noun !== "number" && answer.uncertain) {
        // As the result page says it ("Not sure: 8 or 0?"), with the runner-up beside the answer.
        const ranked = answer.probabilities.map(function (p, digit) { return [p, digit]; })
          .sort(function (a, b) { return b[0] - a[0]; });
        heading.replaceChildren("Not sure: ", element("strong", value, { class: "digit", "data-testid": "live-value" }),
          " or ", element("strong", String(ranked[1][1]), { class: "digit", "data-testid": "live-alternative" }),
          "? (" + percent(ranked[0][0]) + " and " + percent(ranked[1][0]) + ")");
      }
      live.replaceChildren(heading);
      // The API's note on one digit's answer: several digits side by side. The result page
      // says so first; the live answer, read before anyone presses Recognise, must too.
      if (answer.note && section.dataset.numberUrl) {
        const warning = element("p", "This looks like several digits side by side, not one: this answer is for one digit. ",
          { class: "note", "data-testid": "live-note" });
        warning.append(element("a", "Read them as a number", { href: section.dataset.numberUrl }), ".");
        live.prepend(warning);
      }
      if (noun === "number") {
        const row = element("div", undefined, { class: "live-digits" });
        answer.digits.forEach(function (digit, index) {
          row.append(bars(digit.probabilities, digit.digit, "Digit " + (index + 1) + ": " + digit.digit));
        });
        live.append(row);
      } else {
        live.append(bars(answer.probabilities, answer.prediction, "Probability of each digit"));
      }
    }

    async function ask() {
      if (inFlight || !hasInk) return; // the request in flight asks again when it ends
      inFlight = true;
      const asked = version;
      try {
        const blob = await new Promise(function (resolve) { canvas.toBlob(resolve, "image/png"); });
        const body = new FormData();
        body.append("file", blob, "drawing.png");
        const response = await fetch(section.dataset.liveUrl, { method: "POST", body: body });
        const answer = await response.json();
        if (asked !== version) return; // the drawing changed meanwhile: this answer is stale
        live.removeAttribute("aria-busy");
        if (response.ok) {
          show(answer);
        } else {
          live.replaceChildren(element("p", answer.error, { class: "note" }));
        }
      } catch (error) {
        if (asked === version) live.replaceChildren(element("p", "No answer: the server could not be reached.", { class: "note" }));
      } finally {
        inFlight = false;
        // The drawing changed while this answer was on its way: ask again, once the pen is up.
        if (asked !== version && hasInk && !drawing) schedule();
      }
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(ask, DEBOUNCE_MS);
    }

    canvas.addEventListener("pointerdown", function (event) {
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      drawing = true;
      version += 1;
      clearTimeout(timer);
      if (live.childElementCount) live.setAttribute("aria-busy", "true"); // shown dimmed until the new answer
      last = point(event);
      stroke(last, last);
      message.textContent = "";
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!drawing) return;
      const next = point(event);
      stroke(last, next);
      last = next;
    });
    ["pointerup", "pointercancel", "pointerleave"].forEach(function (type) {
      canvas.addEventListener(type, function () {
        if (!drawing) return;
        drawing = false;
        schedule();
      });
    });

    section.querySelector(".draw-clear").addEventListener("click", clear);

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!hasInk) {
        const button = form.querySelector("button[type=submit]");
        message.textContent = "The canvas is empty: draw a " + noun + " first, then press " + button.textContent.trim() + ".";
        return;
      }
      window.digitsForms.markBusy(form);  // forms.js: a second press is ignored from here on
      try { sessionStorage.setItem(savedKey, canvas.toDataURL("image/png")); } catch (error) { /* full or off */ }
      canvas.toBlob(function (blob) {
        const files = new DataTransfer();
        files.items.add(new File([blob], "drawing.png", { type: "image/png" }));
        fileInput.files = files.files;
        form.submit();
      }, "image/png");
    });

    // Back from the result page: the browser may have kept the page (back-forward cache),
    // drawing included; otherwise the drawing kept in this tab's session comes back.
    clear();
    const navigation = performance.getEntriesByType("navigation")[0];
    const saved = sessionStorage.getItem(savedKey);
    if (saved && navigation && navigation.type === "back_forward") {
      const picture = new Image();
      picture.onload = function () { context.drawImage(picture, 0, 0); hasInk = true; };
      picture.src = saved;
    }
    section.querySelector(".draw-clear").addEventListener("click", function () {
      sessionStorage.removeItem(savedKey);
    });
  }

  document.querySelectorAll("section.drawing").forEach(setUp);
})();
