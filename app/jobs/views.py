"""Jobs over HTTP: the JSON API and the two pages. Job ids are unguessable (128 random
bits), and a job is found only through its id: there is no list of jobs."""

import csv
import functools
import io
import secrets
import shutil
import time

from flask import Blueprint, Response, abort, current_app, jsonify, redirect, render_template, request, url_for
from kombu.exceptions import OperationalError

from ..recognition import checked_model_name
from ..uploads import accepts_upload
from .store import status_of
from .tasks import RECOGNISERS, job_folder, job_store, queue_batches, remove_expired_jobs
from .unpack import JobInputRejected, Limits, unpack

bp = Blueprint("jobs", __name__)

CSV_COLUMNS = ("file", "prediction", "confidence", "error")
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets, and a
# file name is the user's text: "=HYPERLINK(...).png" would run when the CSV is opened (OWASP's
# "CSV injection"). Such a cell gets a leading ' , which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FORM_FIELDS = 8  # kind, model, and room for a browser's extras


def accepts_job_upload(view):
    """This route's own limits: JOB_MAX_BYTES, and a form part per file (others keep theirs)."""
    checked = accepts_upload(view, sent="the images or a ZIP of them", field="files")

    @functools.wraps(view)
    def with_job_limits(*args, **kwargs):
        request.max_content_length = current_app.config["JOB_MAX_BYTES"]
        request.max_form_parts = current_app.config["JOB_MAX_FILES"] + FORM_FIELDS
        return checked(*args, **kwargs)

    return with_job_limits


def submitted_job():
    """Make a job of the request's form; its id. Aborts with a clear message."""
    config = current_app.config
    kind = request.form.get("kind", "digit")
    if kind not in RECOGNISERS:
        abort(400, description=f"unknown kind {kind[:20]!r}: use kind=digit or kind=number")
    model = checked_model_name(request.form.get("model", "dense"))
    sent = request.files.getlist("files")
    if not sent:
        abort(400, description="no files: send images, or a ZIP of them, in the multipart form field 'files'")
    remove_expired_jobs()
    job_id = secrets.token_urlsafe(16)
    folder = job_folder(job_id)
    limits = Limits(config["JOB_MAX_FILES"], config["JOB_MAX_UNPACKED_BYTES"], config["JOB_MAX_RATIO"])
    try:
        names = unpack([(file.filename, file.stream) for file in sent], folder, limits)
    except JobInputRejected as exc:
        shutil.rmtree(folder, ignore_errors=True)
        abort(exc.status, description=exc.message)
    job_store().create(job_id, kind, model, names)
    try:
        queue_batches(job_id, list(range(len(names))))
    except OperationalError as exc:  # the broker is down: say so, and keep no half-queued job
        job_store().mark_failed(job_id, f"the job queue is unreachable: {exc}")
        abort(503, description="the job queue is unreachable; try again in a minute")
    return job_id, len(names)


def found_job(job_id):
    """The job's row; 404 once it has expired, or when there never was one."""
    job = job_store().job(job_id) if len(job_id) <= 64 else None
    ttl = current_app.config["JOB_TTL"]
    if job is None or (job.finished_at is not None and job.finished_at < time.time() - ttl):
        abort(404, description=f"no job with this id: finished jobs are deleted after {ttl / 86400:g} days")
    return job


def job_summary(job, after=0):
    answered, failed = job_store().counts(job.id)
    rows = job_store().results(job.id, after=after)
    return {
        "id": job.id,
        "status": status_of(job, answered),
        "kind": job.kind,
        "model": job.model,
        "total": job.total,
        "done": answered,
        "failed": failed,
        "error": job.error,
        "results": [{column: getattr(row, column) for column in CSV_COLUMNS} for row in rows],
        # ?after=<this> next time gives only the rows recorded since.
        "after": rows[-1].seq if rows else after,
    }


# The API


@bp.post("/api/jobs")
@accepts_job_upload
def create_job():
    """Queue a job of the uploaded images and/or ZIPs: 202 with its id and address."""
    job_id, total = submitted_job()
    url = url_for("jobs.job_status", job_id=job_id)
    response = jsonify(id=job_id, status="queued", total=total, url=url)
    response.status_code = 202
    response.headers["Location"] = url
    return response


@bp.get("/api/jobs/<job_id>")
def job_status(job_id):
    """The job's status, counts and answers so far (only those after ?after=N)."""
    after = request.args.get("after", "0")
    if not after.isdigit():
        abort(400, description="after: a whole number, the 'after' of the previous answer")
    return jsonify(job_summary(found_job(job_id), int(after)))


@bp.get("/api/jobs/<job_id>/results.csv")
def job_csv(job_id):
    """The answers so far as CSV (file,prediction,confidence,error), in upload order."""
    job = found_job(job_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in sorted(job_store().results(job.id), key=lambda row: row.position):
        writer.writerow([as_text_cell(row.file), row.prediction, row.confidence, as_text_cell(row.error)])
    return Response(buffer.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="job-{job.id[:8]}.csv"'})


def as_text_cell(text):
    return "'" + text if text and text.startswith(FORMULA_STARTS) else text


# The pages


@bp.get("/jobs")
def jobs_page():
    """Choose images or a ZIP of them, and submit them as a job."""
    return render_template("jobs.html", kinds=list(RECOGNISERS))


@bp.post("/jobs")
@accepts_job_upload
def submit_job_page():
    """Queue the job, then show its page."""
    job_id, _ = submitted_job()
    return redirect(url_for("jobs.job_page", job_id=job_id), code=303)


@bp.get("/jobs/<job_id>")
def job_page(job_id):
    """The job's progress and answers, updated while it runs."""
    return render_template("job.html", job=job_summary(found_job(job_id)))

