// The drawing canvas: pointer events cover mouse, touch and pen alike.
// "Recognise" turns the drawing into a PNG, puts it in the form's file field and
// submits the same form an upload uses, so the server sees an ordinary image.
(function () {
  "use strict";
  const canvas = document.getElementById("draw-canvas");
  const form = document.getElementById("draw-form");
  const fileInput = document.getElementById("draw-file");
  const message = document.getElementById("draw-message");
  const context = canvas.getContext("2d");
  let drawing = false;
  let hasInk = false;
  let last = null;

  function clear() {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    hasInk = false;
    message.textContent = "";
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

  canvas.addEventListener("pointerdown", function (event) {
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    drawing = true;
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
    canvas.addEventListener(type, function () { drawing = false; });
  });

  document.getElementById("draw-clear").addEventListener("click", clear);

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!hasInk) {
      message.textContent = "The canvas is empty: draw a digit first, then press Recognise.";
      return;
    }
    window.digitsForms.markBusy(form);  // forms.js: a second press is ignored from here on
    try { sessionStorage.setItem("digits-drawing", canvas.toDataURL("image/png")); } catch (error) { /* full or off */ }
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
  const saved = sessionStorage.getItem("digits-drawing");
  if (saved && navigation && navigation.type === "back_forward") {
    const picture = new Image();
    picture.onload = function () { context.drawImage(picture, 0, 0); hasInk = true; };
    picture.src = saved;
  }
  document.getElementById("draw-clear").addEventListener("click", function () {
    sessionStorage.removeItem("digits-drawing");
  });
})();
