"""The JSON API: digits, Xception, health."""

from pathlib import Path

from flask import Blueprint, abort, jsonify, request

from .recognition import (admitted, checked_model_name, digit_probabilities, is_uncertain, load_note, number_from,
                          prepared_digit_from, registry, xception_top5)
from .preprocessing import DIGIT_DRAFT, XCEPTION_DRAFT
from .uploads import accepts_upload, read_upload, store_upload

bp = Blueprint("api", __name__)


KEEP_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def checked_keep():
    """Whether to keep a copy of the upload: `keep=0` asks not to, for an answer that
    needs no result page (the pages' live answers while drawing, one per pen lift, would
    otherwise each keep a copy, and push real uploads out of the capped folder)."""
    value = request.values.get("keep", "1")
    if value.lower() not in KEEP_VALUES:
        shown = value if len(value) <= 20 else value[:20] + "..."
        abort(400, description=f"keep must be 1 (keep a copy of the upload: the default) or 0, or yes/no, true/false; got {shown!r}")
    return KEEP_VALUES[value.lower()]


@bp.post("/api/predict/mnist")
@accepts_upload
def predict_mnist():
    """Recognise the handwritten digit in the uploaded image."""
    model_name = checked_model_name(request.values.get("model", "dense"))
    keep = checked_keep()
    with admitted(model_name):
        upload = read_upload(draft=DIGIT_DRAFT)
        prepared = prepared_digit_from(upload)
        probabilities = digit_probabilities(prepared.digit, model_name)
        stored = store_upload(upload) if keep else None
    answer = {
        "model": model_name,
        "prediction": int(probabilities.argmax()),
        "confidence": float(probabilities.max()),
        "uncertain": is_uncertain({model_name: probabilities}, model_name),
        "probabilities": [float(p) for p in probabilities],
        "upload": stored,
    }
    if prepared.side_by_side > 1:  # as the result page says it: this answer is for one digit
        answer["note"] = (f"this looks like {prepared.side_by_side} digits side by side, not one; "
                          "to read them as a number, send it to /api/predict/number")
    return jsonify(answer)


@bp.post("/api/predict/number")
@accepts_upload
def predict_number():
    """Read the handwritten number (a row of up to 20 digits) in the uploaded image."""
    model_name = checked_model_name(request.values.get("model", "cnn"))
    keep = checked_keep()
    with admitted(model_name):
        upload = read_upload(draft=DIGIT_DRAFT)
        reading = number_from(upload, model_name)
        stored = store_upload(upload) if keep else None
    return jsonify(**reading.as_json(), upload=stored)


@bp.post("/api/predict/xception")
@accepts_upload
def predict_xception():
    """Label the uploaded photo with Xception's top-5 ImageNet classes."""
    keep = checked_keep()
    with admitted("xception"):
        upload = read_upload(draft=XCEPTION_DRAFT)
        predictions, load_seconds = xception_top5(upload)
        stored = store_upload(upload) if keep else None
    answer = {"model": "xception", "predictions": predictions, "upload": stored}
    note = load_note(load_seconds)
    if note:
        answer["note"] = note
    return jsonify(answer)


@bp.get("/health")
def health():
    """Liveness: the state of each model; always 200 while the server answers. Under
    gunicorn it has threads of its own (buffering_worker.py): no upload or model call
    can make it wait."""
    models = registry()
    server_paths = [str(models.xception_weights), str(models.models_folder)]
    return jsonify(status="ok", models=without_paths(models.health(), server_paths))


@bp.get("/ready")
def ready():
    """Readiness: 200 when this worker answers digits now (models loaded, digit queues
    not full), 503 with the reasons otherwise. Like /health, it never waits."""
    models = registry()
    is_ready, reasons = models.readiness()
    answer = {"status": "ready" if is_ready else "not ready", "queues": models.queue_state()}
    if reasons:
        answer["reasons"] = reasons
    return jsonify(answer), 200 if is_ready else 503


def without_paths(value, paths):
    """`value` (nested dicts of strings) with each of `paths` cut to its last part:
    anyone can read /health, and the server's directories are nobody's business."""
    if isinstance(value, dict):
        return {key: without_paths(item, paths) for key, item in value.items()}
    if isinstance(value, str):
        for path in paths:
            if "/" in path or "\\" in path:
                value = value.replace(path, Path(path).name)
    return value
