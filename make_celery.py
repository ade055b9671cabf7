"""The Celery app of the Flask app, for workers: `celery -A make_celery worker` (`make worker`).

A worker builds the same app as gunicorn does, so it reads the same settings
(environment variables: CELERY_BROKER_URL, DATABASE_URL, JOB_FOLDER, ...)."""

from celery.signals import worker_process_init, worker_ready

from app import create_app
from app.jobs.tasks import on_pool_process_start, on_worker_ready

flask_app = create_app()
celery_app = flask_app.extensions["celery"]


@worker_ready.connect
def _worker_ready(**_):
    on_worker_ready(flask_app)


@worker_process_init.connect
def _pool_process_start(**_):
    on_pool_process_start(flask_app)
