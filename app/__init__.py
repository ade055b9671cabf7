"""Digit and image recognition: a Flask app around the lesson's MNIST models and Xception.

    flask --app app run          # development
    make run                     # production (gunicorn), see gunicorn.conf.py
"""

import os
from pathlib import Path

from flask import Flask

from .images import DEFAULT_MAX_PIXELS
from .models import BATCH_MAX_WAIT_SECONDS, DEFAULT_QUEUES, XCEPTION_NICE, ModelRegistry, QueueSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Settings a deployment may change through environment variables, with their types.
ENVIRONMENT_SETTINGS = {
    "UPLOAD_FOLDER": str,
    "MODELS_FOLDER": str,
    "XCEPTION_WEIGHTS": str,
    "XCEPTION_EAGER": lambda value: value.lower() in ("1", "true", "yes"),
    "MAX_CONTENT_LENGTH": int,
    "MAX_IMAGE_PIXELS": int,
    "UPLOAD_MAX_FILES": int,
    "UPLOAD_MAX_BYTES": int,
    "UPLOAD_STORED_MAX_SIDE": int,
    "DENSE_QUEUE_LIMIT": int,
    "CNN_QUEUE_LIMIT": int,
    "XCEPTION_QUEUE_LIMIT": int,
    "CNN_MAX_BATCH": int,
    "XCEPTION_MAX_BATCH": int,
    "BATCH_MAX_WAIT_MS": float,
    "XCEPTION_NICE": int,
}


def create_app(test_config=None):
    """Build the app: defaults, then environment variables, then `test_config`."""
    app = Flask(__name__)
    app.config.from_mapping(
        UPLOAD_FOLDER=str(PROJECT_ROOT / "uploads"),
        MODELS_FOLDER=str(PROJECT_ROOT / "models"),
        XCEPTION_WEIGHTS="imagenet",  # Keras downloads and caches them; or a local file
        XCEPTION_EAGER=False,  # 88 MB of weights: load on first use unless asked
        MAX_CONTENT_LENGTH=10 * 1024 * 1024,  # a phone photo, with room to spare
        # Text fields are a few short words, but Werkzeug also holds up to this much of
        # a file part in memory while it looks for the boundary: 64 KB broke real JPEGs.
        MAX_FORM_MEMORY_SIZE=1024 * 1024,
        MAX_FORM_PARTS=16,
        MAX_IMAGE_PIXELS=DEFAULT_MAX_PIXELS,  # 40 megapixels
        # Caps on the upload folder, for all workers together (app/quota.py): to make room
        # for a new upload, the oldest are deleted. UPLOAD_MAX_FILES=0 keeps no uploads.
        UPLOAD_MAX_FILES=1000,
        UPLOAD_MAX_BYTES=500 * 1024 * 1024,
        UPLOAD_STORED_MAX_SIDE=1024,  # re-encoded copies are reduced to this (app/uploads.py)
        # Each model's place in line, per worker process (app/batching.py): requests at once,
        # past which a 503 with Retry-After; rows per batched call; a batch's longest wait.
        DENSE_QUEUE_LIMIT=DEFAULT_QUEUES["dense"].limit,
        CNN_QUEUE_LIMIT=DEFAULT_QUEUES["cnn"].limit,
        XCEPTION_QUEUE_LIMIT=DEFAULT_QUEUES["xception"].limit,
        CNN_MAX_BATCH=DEFAULT_QUEUES["cnn"].max_batch,
        XCEPTION_MAX_BATCH=DEFAULT_QUEUES["xception"].max_batch,
        BATCH_MAX_WAIT_MS=BATCH_MAX_WAIT_SECONDS * 1000,
        # Xception's TensorFlow threads run this much nicer than the request threads (0: not at all).
        XCEPTION_NICE=XCEPTION_NICE,
    )
    for key, convert in ENVIRONMENT_SETTINGS.items():
        if key in os.environ:
            app.config[key] = convert(os.environ[key])
    if test_config is not None:
        app.config.from_mapping(test_config)

    app.extensions["models"] = ModelRegistry(
        app.config["MODELS_FOLDER"], app.config["XCEPTION_WEIGHTS"], queues=queue_settings(app.config),
        batch_max_wait=app.config["BATCH_MAX_WAIT_MS"] / 1000, xception_nice=app.config["XCEPTION_NICE"],
    )

    from . import api, errors, jobs, pages, serving, uploads

    uploads.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(serving.bp)
    jobs.init_app(app)
    errors.init_app(app)
    return app


def queue_settings(config):
    """Each model's QueueSettings from the app's config."""
    return {
        name: QueueSettings(
            limit=config[f"{name.upper()}_QUEUE_LIMIT"],
            max_batch=config.get(f"{name.upper()}_MAX_BATCH", 1),
            seconds_per_request=DEFAULT_QUEUES[name].seconds_per_request,
        )
        for name in DEFAULT_QUEUES
    }
