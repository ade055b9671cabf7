// The drawing canvases (one digit on the home page, a number in number mode): pointer
// events cover mouse, touch and pen alike. Each time the pen lifts, the drawing is
// sent to the JSON API (debounced, at most one request in flight; on the digit canvas to
// both digit models at once, as the result page asks both) and the answer is
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

    // An API error as the error page writes it: capital first, full stop last.
    function sentence(error) {
      return error.charAt(0).toUpperCase() + error.slice(1) + ".";
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
      if (from.x === to.x && from.y === to.y) {
        // A tap (a decimal point): the canvas drops a zero-length line, round cap and all,
        // so the dot is filled as a disc the width of the pen.
        context.fillStyle = "#000";
        context.arc(to.x, to.y, context.lineWidth / 2, 0, 2 * Math.PI);
        context.fill();
      } else {
        context.moveTo(from.x, from.y);
        context.lineTo(to.x, to.y);
        context.stroke();
      }
      hasInk = true;
    }

    function element(tag, text, attributes) {
      const node = document.createElement(tag);
      if (text !== undefined) node.textContent = text;
      Object.entries(attributes || {}).forEach(function ([name, value]) { node.setAttribute(name, value); });
      return node;
    }

    // Hidden from screen readers: the live region would read out ten unlabelled meters a digit
    // at every pen lift, after the sentence that already says the answer and how sure it is.
    function bars(probabilities, best) {
      const list = element("ol", undefined, { class: "live-bars", "aria-hidden": "true" });
      probabilities.forEach(function (p, digit) {
        const item = element("li", undefined, digit === best ? { class: "best" } : {});
        item.append(element("span", String(digit)), element("meter", undefined, { min: "0", max: "1", value: String(p) }));
        list.append(item);
      });
      return list;
    }

    // The result page's names for the models, as it says which one says what.
    const MODEL_NAMES = { cnn: "the convolutional network", dense: "the dense network" };

    // `other`: the second model's answer on the digit canvas (null when none came), so that
    // "Not sure" follows the result page's whole rule: the CNN under 80% sure, or the models
    // disagreeing, with the other model's digit as the alternative.
    function show(answer, other) {
      const percent = function (p) { return (p * 100).toFixed(1) + "%"; };
      const value = noun === "number" ? answer.number : String(answer.prediction);
      const heading = element("p", noun === "number" ? "It reads " : "It looks like a ");
      heading.append(element("strong", value, { class: "digit", "data-testid": "live-value" }),
        " (" + percent(answer.confidence) + " sure)");
      const disagreeing = Boolean(other) && other.prediction !== answer.prediction;
      if (noun !== "number" && (answer.uncertain || disagreeing)) {
        // As the result page says it ("Not sure: 8 or 0?"): the other model's digit, or the runner-up.
        const ranked = answer.probabilities.map(function (p, digit) { return [p, digit]; })
          .sort(function (a, b) { return b[0] - a[0]; });
        const alternative = disagreeing ? other.prediction : ranked[1][1];
        const detail = disagreeing
          ? " (" + MODEL_NAMES[answer.model] + " says " + value + ", " + percent(answer.confidence) + " sure; "
            + MODEL_NAMES[other.model] + " says " + other.prediction + ", " + percent(other.confidence) + " sure)"
          : " (" + percent(ranked[0][0]) + " and " + percent(ranked[1][0]) + ")";
        heading.replaceChildren("Not sure: ", element("strong", value, { class: "digit", "data-testid": "live-value" }),
          " or ", element("strong", String(alternative), { class: "digit", "data-testid": "live-alternative" }),
          "?" + detail);
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
        answer.digits.forEach(function (digit) {
          row.append(bars(digit.probabilities, digit.digit));
        });
        live.append(row);
      } else {
        live.append(bars(answer.probabilities, answer.prediction));
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
        // The digit canvas asks the second model too (data-other-model-url), as the result page does.
        const urls = [section.dataset.liveUrl].concat(section.dataset.otherModelUrl || []);
        const responses = await Promise.all(urls.map(function (url) { return fetch(url, { method: "POST", body: body }); }));
        const answers = await Promise.all(responses.map(function (response) { return response.json(); }));
        if (asked !== version) return; // the drawing changed meanwhile: this answer is stale
        live.removeAttribute("aria-busy");
        const [response, otherResponse] = responses;
        const otherFailed = Boolean(otherResponse) && !otherResponse.ok;
        if (response.ok) {
          show(answers[0], otherResponse && otherResponse.ok ? answers[1] : null);
          // The first model's answer stands alone, with the reason, as on the result page.
          if (otherFailed) live.append(element("p", sentence(answers[1].error), { class: "note" }));
        } else {
          live.replaceChildren(element("p", sentence(answers[0].error), { class: "note" }));
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
