"""The Celery side of jobs: the app (Flask's Celery pattern), the batch task, and
what a worker does when it starts.

A task carries a job id and the positions of its files, never the images. It is
acknowledged late (after its answers are recorded) and may run twice: after a
worker died, or when Redis hands a slow task to another worker. Running twice is
harmless: it skips the files that already have an answer, and the store writes each
file's answer once.
"""

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from celery import Celery, Task, shared_task
from flask import current_app
from werkzeug.exceptions import HTTPException

from ..images import ImageRejected
from ..models import DIGIT_MODELS, ModelUnavailable
from ..preprocessing import DIGIT_DRAFT, NoDigitFound, prepare_image
from ..recognition import TooManyDigits, digit_model, read_number, registry, uploaded_size
from ..uploads import decoded_upload
from .broker import is_sql_broker

log = logging.getLogger(__name__)


def celery_init_app(app):
    """A Celery app from app.config["CELERY"] whose tasks run inside the Flask app's context."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def job_store():
    return current_app.extensions["jobs"]


def job_folder(job_id):
    return Path(current_app.config["JOB_FOLDER"]) / job_id


# Recognition: each kind of job is one function of (files, model name) -> answers.


@dataclass
class Answer:
    prediction: str | None = None
    confidence: float | None = None
    error: str | None = None


def recognise_digits(files, model_name):
    """An Answer for each (name, bytes) in `files`: the single-image API's path
    (decoded_upload -> prepare_image -> digit model), with one model call for all."""
    max_pixels = current_app.config["MAX_IMAGE_PIXELS"]
    answers, digits, readable = [None] * len(files), [], []
    for index, (name, data) in enumerate(files):
        try:
            digits.append(prepare_image(decoded_upload(data, name, max_pixels, DIGIT_DRAFT).image))
            readable.append(index)
        except (ImageRejected, NoDigitFound) as exc:
            answers[index] = Answer(error=str(exc))
    if digits:
        for index, probabilities in zip(readable, digit_model(model_name)(np.stack(digits))):
            answers[index] = Answer(prediction=str(int(probabilities.argmax())), confidence=float(probabilities.max()))
    return answers


def recognise_numbers(files, model_name):
    """An Answer for each (name, bytes) in `files`: /api/predict/number's path
    (decoded_upload -> read_number, every digit of a picture in one model call)."""
    max_pixels = current_app.config["MAX_IMAGE_PIXELS"]
    answers = []
    for name, data in files:
        try:
            upload = decoded_upload(data, name, max_pixels, DIGIT_DRAFT)
            reading = read_number(upload.image, model_name, uploaded_size(upload))
            answers.append(Answer(prediction=reading.number, confidence=reading.confidence))
        except (ImageRejected, NoDigitFound, TooManyDigits) as exc:
            answers.append(Answer(error=str(exc)))
    return answers


RECOGNISERS = {"digit": recognise_digits, "number": recognise_numbers}


# The task


@shared_task(name="jobs.recognise_batch", acks_late=True, reject_on_worker_lost=True)
def recognise_batch(job_id, positions):
    """Answer the files at `positions` of the job that have no answer yet."""
    store = job_store()
    job = store.job(job_id)
    if job is None or job.finished_at is not None:  # expired, or failed already
        return
    todo = store.unanswered(job_id, positions)
    if not todo:  # a redelivered task whose work is done
        return
    store.mark_started(job_id)
    folder = job_folder(job_id)
    try:
        files = [(name, (folder / str(position)).read_bytes()) for position, name in todo]
    except OSError as exc:  # a worker machine that does not share the web machines' JOB_FOLDER
        log.error("job %s failed: %s", job_id, exc)
        store.mark_failed(job_id, "a worker could not read the job's files; every machine must share "
                                  f"JOB_FOLDER ({exc.__class__.__name__})")
        return
    try:
        answers = RECOGNISERS[job.kind](files, job.model)
    except HTTPException as exc:  # the model can't load (503): no file of this job can be answered
        log.warning("job %s failed: %s", job_id, exc.description)
        store.mark_failed(job_id, exc.description)
        return
    store.record(job_id, [
        {"position": position, "file": name, **vars(answer)}
        for (position, name), answer in zip(todo, answers)
    ])


def queue_batches(job_id, positions):
    """One task for each JOB_BATCH_SIZE of `positions`."""
    size = current_app.config["JOB_BATCH_SIZE"]
    task = current_app.extensions["celery"].tasks[recognise_batch.name]
    for start in range(0, len(positions), size):
        task.delay(job_id, positions[start:start + size])


# A worker process's start


def broker_forgets_delivered_tasks(config):
    """Kombu's SQLAlchemy transport (the embedded default) marks a task delivered when a
    worker takes it, and never hands it out again, even if that worker is killed before
    acknowledging it. (Redis does: after the visibility timeout.)"""
    return is_sql_broker(config["CELERY_BROKER_URL"])


def on_worker_ready(app):
    """Delete expired jobs; with a broker that forgets, queue again the unanswered
    files of every unfinished job, since a killed worker's tasks are gone with it.
    Those still queued run twice, and their second run finds nothing to do."""
    with app.app_context():
        remove_expired_jobs()
        if broker_forgets_delivered_tasks(app.config):
            for job_id, positions in job_store().unfinished().items():
                log.info("job %s: queueing %d unanswered files again", job_id, len(positions))
                queue_batches(job_id, positions)


def on_pool_process_start(app):
    """A new pool process: its own database connections, and models loaded before the first task."""
    app.extensions["jobs"].forget_connections()
    with app.app_context():
        for name in DIGIT_MODELS:
            try:
                registry().digit(name).warm_up()
            except ModelUnavailable as exc:  # its jobs fail, with this message, when they run
                log.warning("the %s digit model is not loaded: %s", name, exc)


def remove_expired_jobs():
    """Delete the jobs that finished more than JOB_TTL seconds ago, and their files."""
    for job_id in job_store().expire(current_app.config["JOB_TTL"]):
        shutil.rmtree(job_folder(job_id), ignore_errors=True)
