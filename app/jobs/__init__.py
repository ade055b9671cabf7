"""Batch jobs: many images in (files and/or ZIPs), one answer per file out, on Celery.

    POST /api/jobs -> 202 {"id", "status", "total", "url"}     (views.py)
    GET  /api/jobs/<id>, /api/jobs/<id>/results.csv, and the pages /jobs, /jobs/<id>

The web process unpacks the upload into the job's folder (unpack.py), records the job
(store.py) and queues one Celery task per batch of files; a worker runs each file
through the single-image path (read -> prepare_image -> the digit model, one model
call per batch) and records each file's answer once (tasks.py).

Embedded default, with nothing configured: Kombu's SQLAlchemy transport on SQLite
under instance/ is the broker, job state is SQLite there too, and `make run` starts a
worker beside gunicorn (embedded_worker.py). Many machines: CELERY_BROKER_URL=redis://...,
DATABASE_URL=postgresql://..., JOB_FOLDER on storage every machine mounts, and
`make worker` on each worker machine.
"""

import os

from .broker import SCHEME, is_sql_broker
from .store import JobStore

DAY = 24 * 60 * 60
MEGABYTE = 1024 * 1024

# Settings, their defaults (None: made from the instance folder) and types.
SETTINGS = {
    "JOB_FOLDER": (None, str),  # each job's files, under <JOB_FOLDER>/<job id>/
    "DATABASE_URL": (None, str),  # the state store: sqlite:///... or postgresql://...
    "CELERY_BROKER_URL": (None, str),
    "JOB_MAX_FILES": (10_000, int),
    "JOB_MAX_BYTES": (200 * MEGABYTE, int),  # the request to POST /api/jobs; other routes keep MAX_CONTENT_LENGTH
    "JOB_MAX_UNPACKED_BYTES": (1024 * MEGABYTE, int),  # all of a job's ZIP members, unpacked
    "JOB_MAX_RATIO": (200, int),  # a ZIP member's uncompressed / compressed size (blank scans reach ~100)
    "JOB_TTL": (7 * DAY, int),  # seconds a finished job and its files are kept
    "JOB_BATCH_SIZE": (16, int),  # files per task: one model call each; the first answers come sooner than at 32
    "JOB_REDELIVERY_SECONDS": (300, int),  # Redis: an unacknowledged task goes to another worker after this
}


def celery_settings(config):
    """Celery's own settings (lowercase), for the broker in `config`."""
    broker = config["CELERY_BROKER_URL"]
    if is_sql_broker(broker):
        transport_options = {"connect_args": {"timeout": 30}}  # writers take turns on one SQLite file
        # A polled broker: each pool process has its next task at hand when it finishes one,
        # instead of idling until the next poll. (Redis pushes tasks as they are wanted.)
        prefetch = 4
    else:
        prefetch = 1
        redelivery = config["JOB_REDELIVERY_SECONDS"]
        transport_options = {
            "visibility_timeout": redelivery,
            # Look for tasks of dead workers every few seconds, not every 100 (Kombu's default).
            "unacked_restore_interval": max(1, redelivery // 4),
            "unacked_restore_throttle": 1,
        }
    return {
        "broker_url": broker,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # A task is acknowledged once its answers are recorded; a worker that dies before
        # then leaves it to another (Redis: after the visibility timeout; a pool process
        # that dies: at once).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": prefetch,
        "task_ignore_result": True,  # the answers are in the state store
        "worker_proc_alive_timeout": 120,  # a pool process loads the models before it says it is alive
        "worker_hijack_root_logger": False,
    }


def init_app(app):
    """Settings (environment, then defaults), the state store and the Celery app."""
    config = app.config
    instance = app.instance_path
    defaults = {
        "JOB_FOLDER": os.path.join(instance, "jobs"),
        "DATABASE_URL": "sqlite:///" + os.path.join(instance, "jobs.sqlite"),
        "CELERY_BROKER_URL": SCHEME + "+sqlite:///" + os.path.join(instance, "broker.sqlite"),
    }
    for key, (default, convert) in SETTINGS.items():
        if key not in config:
            config[key] = convert(os.environ[key]) if key in os.environ else defaults.get(key, default)
    for url in (config["DATABASE_URL"], config["CELERY_BROKER_URL"]):
        if url.split("+", 1)[-1].startswith("sqlite:///"):  # SQLite makes the file, not its folder
            os.makedirs(os.path.dirname(url.split(":///", 1)[1]) or ".", exist_ok=True)
    config["CELERY"] = {**celery_settings(config), **config.get("CELERY", {})}
    app.extensions["jobs"] = JobStore(config["DATABASE_URL"])

    from . import tasks, views

    tasks.celery_init_app(app)
    app.register_blueprint(views.bp)
