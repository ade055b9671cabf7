"""The HTML pages: upload or draw a digit or a number, label a photo with Xception, read
about the models.

A successful upload is answered with a redirect to its result page (POST-redirect-GET):
/digits/<upload name>, /numbers/<upload name> or /xception/<upload name> shows the answer
kept beside the stored upload, so reload, back, bookmarks and shared links all show the
same answer.
"""

import base64
import io
from pathlib import Path

import numpy as np
from flask import Blueprint, abort, current_app, redirect, render_template, request, send_file, send_from_directory, url_for
from PIL import Image

from .models import DIGIT_MODELS, ModelUnavailable
from .recognition import (UNSURE_BELOW, admitted, is_uncertain, load_note, number_from, prepared_digit_from, registry,
                          uploaded_size, xception_top5)
from .preprocessing import DIGIT_DRAFT, XCEPTION_DRAFT
from .uploads import STORED_NAME, accepts_upload, read_upload, store_upload, stored_answer

bp = Blueprint("pages", __name__)

PLOTS = ("curves", "confusion", "errors")
PREVIEW_SIDE = 640  # result pages show the stored upload at most this large
MODEL_NAMES = {"cnn": "convolutional network", "dense": "dense network (the lesson's)"}


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
    """The CNN's reading of an uploaded or drawn number; then its result page. (The page
    with JavaScript answers while the user draws, through the JSON API; this is the
    no-JavaScript route, and the upload form's.)"""
    with admitted("cnn"):
        upload = read_upload(draft=DIGIT_DRAFT)
        reading = number_from(upload, "cnn")
        answer = {"kind": "number", "reading": reading.as_json(), "size": list(uploaded_size(upload)),
                  "model_inputs": [png_data_url(digit.pixels) for digit in reading.digits]}
        upload_name = store_upload(upload, answer)
    return result_page(answer, upload_name, "pages.number_result")


@bp.get("/number")
def number_form():
    """The address the number forms post to, opened or bookmarked (answers used to be shown
    there): the number forms."""
    return redirect(url_for("pages.index", mode="number"))


@bp.get("/numbers/<name>")
def number_result(name):
    """The reading of a stored number upload: each digit's box, input and bars."""
    return render_number(answer_for(name, "number"), name)


def render_number(answer, upload_name):
    return render_template("number.html", reading=answer["reading"], size=answer["size"],
                           model_inputs=answer["model_inputs"], upload_name=upload_name)


@bp.post("/predict")
@accepts_upload
def predict():
    """Both digit models' answers for an uploaded or drawn digit; then its result page."""
    with admitted(*DIGIT_MODELS):
        upload = read_upload(draft=DIGIT_DRAFT)
        prepared = prepared_digit_from(upload)
        results, errors = {}, {}
        for name in DIGIT_MODELS:
            try:
                results[name] = [float(p) for p in registry().digit(name)(prepared.digit)[0]]
            except ModelUnavailable as exc:
                errors[name] = str(exc)
        if not results:
            abort(503, description=" ".join(errors.values()))
        answer = {"kind": "digits", "results": results, "errors": errors, "side_by_side": prepared.side_by_side,
                  "model_input": png_data_url(prepared.digit)}
        upload_name = store_upload(upload, answer)
    return result_page(answer, upload_name, "pages.digits_result")


@bp.get("/predict")
def predict_form():
    """The address the forms post to, opened or bookmarked: the home page has the forms."""
    return redirect(url_for("pages.index"))


@bp.get("/digits/<name>")
def digits_result(name):
    """The answer about a stored digit upload."""
    return render_digits(answer_for(name, "digits"), name)


def render_digits(answer, upload_name):
    results = answer["results"]
    headline = "cnn" if "cnn" in results else "dense"
    ranked = sorted(range(10), key=lambda digit: -results[headline][digit])
    others = {name: max(range(10), key=results[name].__getitem__)  # the headline model first
              for name in sorted(results, key=lambda name: name != headline)}
    disagreeing = [digit for digit in others.values() if digit != ranked[0]]
    return render_template(
        "result.html",
        prediction=ranked[0],
        alternative=disagreeing[0] if disagreeing else ranked[1],  # the other model's, or the runner-up
        models_disagree=bool(disagreeing),
        confidence=results[headline][ranked[0]],
        uncertain=is_uncertain(results, headline),
        answers=others,
        best_model=headline,
        model_names=MODEL_NAMES,
        unsure_below=UNSURE_BELOW,
        results=results,
        errors=answer["errors"],
        side_by_side=answer["side_by_side"],
        upload_name=upload_name,
        model_input=answer["model_input"],
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
        answer = {"kind": "xception", "predictions": predictions, "note": load_note(load_seconds)}
        upload_name = store_upload(upload, answer)
    return result_page(answer, upload_name, "pages.xception_result")


@bp.get("/xception/<name>")
def xception_result(name):
    """Xception's answer about a stored photo."""
    answer = answer_for(name, "xception")
    return render_xception(answer, name)


def render_xception(answer, upload_name):
    return render_template("xception.html", predictions=answer["predictions"], note=answer["note"],
                           upload_name=upload_name)


def result_page(answer, upload_name, endpoint):
    """Redirect to the stored upload's result page (303: the browser then GETs it). When
    uploads are not kept (UPLOAD_MAX_FILES = 0), there is no page to go to: answer here."""
    if upload_name is None:
        return RENDERERS[answer["kind"]](answer, None)
    return redirect(url_for(endpoint, name=upload_name), code=303)


# What each kind of kept answer must hold for its page to be drawn.
ANSWER_FIELDS = {"digits": {"results", "errors", "side_by_side", "model_input"}, "xception": {"predictions", "note"},
                 "number": {"reading", "size", "model_inputs"}}
RENDERERS = {"digits": render_digits, "xception": render_xception, "number": render_number}


def answer_for(name, kind):
    """The answer kept with a stored upload of this kind; a friendly 404 when it is gone
    (or its file is damaged, or of another shape)."""
    answer = stored_answer(name)
    if answer is None or answer.get("kind") != kind or not ANSWER_FIELDS[kind] <= answer.keys():
        abort(404, description="this result is no longer kept: uploads are deleted, oldest first, "
                               "to make room for new ones; upload the picture again")
    return answer


@bp.get("/models")
def models():
    """Accuracy, size, training recipe and curves of each digit model, and what a CNN is."""
    reports = {name: registry().digit_report(name) for name in DIGIT_MODELS}
    folder = Path(current_app.config["MODELS_FOLDER"])
    plots = {name: [plot for plot in PLOTS if (folder / f"mnist_{name}_{plot}.png").is_file()] for name in DIGIT_MODELS}
    return render_template("models.html", reports=reports, plots=plots, unsure_below=UNSURE_BELOW,
                           model_names=MODEL_NAMES)


@bp.app_template_filter("duration")
def duration(seconds):
    """Seconds as people say them: "45 s", "17 min", "1 h 5 min"."""
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


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
    return inert(send_from_directory(current_app.config["UPLOAD_FOLDER"], name))


@bp.get("/uploads/<name>/preview")
def upload_preview(name):
    """A stored upload reduced to at most PREVIEW_SIDE pixels a side, for result pages."""
    if not STORED_NAME.fullmatch(name):
        abort(404)
    try:
        with Image.open(Path(current_app.config["UPLOAD_FOLDER"]) / name) as image:
            image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            as_jpeg = image.format == "JPEG"
            image.save(buffer, "JPEG" if as_jpeg else "PNG", **({"quality": 85} if as_jpeg else {}))
    except FileNotFoundError:
        abort(404)
    buffer.seek(0)
    response = send_file(buffer, mimetype="image/jpeg" if as_jpeg else "image/png", max_age=3600)
    return inert(response)


def inert(response):
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Content-Disposition"] = "inline"
    return response
