"""The HTML pages: upload or draw a digit, label a photo with Xception, read about the models."""

import base64
import io

import numpy as np
from flask import Blueprint, abort, current_app, render_template, request, send_from_directory
from PIL import Image

from .models import DIGIT_MODELS, ModelUnavailable
from .recognition import admitted, digit_from, load_note, number_from, registry, uploaded_size, xception_top5
from .preprocessing import DIGIT_DRAFT, XCEPTION_DRAFT
from .uploads import STORED_NAME, accepts_upload, read_upload, store_upload

bp = Blueprint("pages", __name__)

PLOTS = ("curves", "confusion", "errors")


def png_data_url(digit):
    """The 28x28 model input as an inline PNG, to show what the model saw."""
    buffer = io.BytesIO()
    Image.fromarray((digit * 255).round().astype(np.uint8), mode="L").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@bp.get("/")
def index():
    """Upload a photo of a digit, or draw one; with ?mode=number, of a whole number."""
    if request.args.get("mode") == "number":
        return render_template("number.html")
    return render_template("index.html")


@bp.post("/number")
@accepts_upload
def number():
    """The CNN's reading of an uploaded or drawn number: each digit's box, input and bars.

    Rendered in answer to the POST, as /predict is: the page with JavaScript answers
    while the user draws, through the JSON API, and this is the no-JavaScript route."""
    with admitted("cnn"):
        upload = read_upload(draft=DIGIT_DRAFT)
        reading = number_from(upload, "cnn")
        stored = store_upload(upload)
    return render_template(
        "number.html",
        reading=reading,
        size=uploaded_size(upload),
        model_inputs=[png_data_url(digit.pixels) for digit in reading.digits],
        upload_name=stored,
    )


@bp.post("/predict")
@accepts_upload
def predict():
    """Both digit models' answers for an uploaded or drawn digit."""
    with admitted(*DIGIT_MODELS):
        upload = read_upload(draft=DIGIT_DRAFT)
        digit = digit_from(upload)
        results, errors = {}, {}
        for name in DIGIT_MODELS:
            try:
                results[name] = [float(p) for p in registry().digit(name)(digit)[0]]
            except ModelUnavailable as exc:
                errors[name] = str(exc)
        if not results:
            abort(503, description=" ".join(errors.values()))
        upload_name = store_upload(upload)
    best_model = "cnn" if "cnn" in results else "dense"
    probabilities = results[best_model]
    return render_template(
        "result.html",
        prediction=int(np.argmax(probabilities)),
        confidence=max(probabilities),
        best_model=best_model,
        results=results,
        errors=errors,
        upload_name=upload_name,
        model_input=png_data_url(digit),
    )


@bp.route("/xception", methods=["GET", "POST"])
@accepts_upload
def xception():
    """Upload any photo and see Xception's five likeliest ImageNet labels."""
    if request.method == "GET":
        return render_template("xception.html")
    with admitted("xception"):
        upload = read_upload(draft=XCEPTION_DRAFT)
        predictions, load_seconds = xception_top5(upload)
        upload_name = store_upload(upload)
    return render_template(
        "xception.html",
        predictions=predictions,
        note=load_note(load_seconds),
        upload_name=upload_name,
    )


@bp.get("/models")
def models():
    """Accuracy, size, training recipe and curves of each digit model, and what a CNN is."""
    reports = {name: registry().digit_report(name) for name in DIGIT_MODELS}
    return render_template("models.html", reports=reports)


@bp.get("/models/<arch>/<plot>.png")
def model_plot(arch, plot):
    """A plot that train_mnist.py drew."""
    if arch not in DIGIT_MODELS or plot not in PLOTS:
        abort(404)
    return send_from_directory(current_app.config["MODELS_FOLDER"], f"mnist_{arch}_{plot}.png")


@bp.get("/uploads/<name>")
def uploaded_file(name):
    """An accepted upload, served as an inert image (never as HTML or script)."""
    if not STORED_NAME.fullmatch(name):
        abort(404)
    response = send_from_directory(current_app.config["UPLOAD_FOLDER"], name)
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Content-Disposition"] = "inline"
    return response
