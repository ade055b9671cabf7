"""Batch jobs through the API and the pages, with Celery's eager mode: each task runs
inside the request that queued it (conftest's `app`). Real workers, Redis and killed
workers: test_jobs_workers.py."""

import csv
import io
import os
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app import create_app
from app.jobs.tasks import recognise_batch
from app.models import ModelRegistry
from app.samples import labelled_digits, multipart_files, zip_bytes
from helpers import encode, multipart, post_file

MEGABYTE = 1024 * 1024


def submit(client, files, url="/api/jobs", headers=None, **fields):
    """POST [(filename, bytes)] in the field 'files' (encoded here: the test client
    would leave big files in temporary files it never closes)."""
    body, content_type = multipart_files(files, **fields)
    return client.post(url, data=body, content_type=content_type, headers=headers)


def answers(client, job_id):
    return client.get(f"/api/jobs/{job_id}").json


def stored_job_folders(app):
    folder = Path(app.config["JOB_FOLDER"])
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def digits():
    return labelled_digits(12)


# The API


def test_a_zip_of_digits_becomes_a_job_with_every_answer(client, digits):
    labels, files = digits
    response = submit(client, [("scans.zip", zip_bytes(files))], model="cnn")
    assert response.status_code == 202
    job = response.json
    assert job["status"] == "queued" and job["total"] == 12
    assert job["url"] == f"/api/jobs/{job['id']}" and response.headers["Location"] == job["url"]
    assert len(job["id"]) >= 22  # 128 random bits

    summary = answers(client, job["id"])
    assert (summary["status"], summary["total"], summary["done"], summary["failed"]) == ("done", 12, 12, 0)
    assert sorted(row["file"] for row in summary["results"]) == sorted(files)
    for row in summary["results"]:
        assert row["prediction"] == str(labels[row["file"]]), row
        assert 0.5 < row["confidence"] <= 1 and row["error"] is None


def test_the_answers_are_the_single_image_apis(client, digits):
    """Same path: each job row has the prediction and confidence /api/predict/mnist gives."""
    _, files = digits
    job = submit(client, list(files.items()), model="dense").json
    for row in answers(client, job["id"])["results"]:
        single = post_file(client, "/api/predict/mnist", files[row["file"]], model="dense").json
        assert row["prediction"] == str(single["prediction"])
        assert row["confidence"] == pytest.approx(single["confidence"], rel=1e-5)


def test_a_number_job_answers_what_the_number_api_answers(client, mnist_sample):
    """kind=number: each row is /api/predict/number's number and confidence, through the
    same reader; a blank picture and a non-image fail their own rows with its messages."""
    from app.samples import written_number

    images, _ = mnist_sample
    files = {f"n{i}.png": encode(written_number(images[3 * i:3 * i + 3] / 255.0)) for i in range(3)}
    files["blank.png"] = encode(np.full((60, 200), 255, np.uint8))
    files["notes.txt"] = b"just text"
    job = submit(client, list(files.items()), kind="number", model="cnn").json
    rows = answers(client, job["id"])["results"]
    assert sorted(row["file"] for row in rows) == sorted(files)
    for row in rows:
        single = post_file(client, "/api/predict/number", files[row["file"]], row["file"], model="cnn").json
        if "error" in single:
            assert row["prediction"] is None and row["error"] == single["error"], row
        else:
            assert row["prediction"] == single["number"] and len(row["prediction"]) == 3, row
            assert row["confidence"] == pytest.approx(single["confidence"], rel=1e-5)
    assert sum(row["error"] is not None for row in rows) == 2


def test_the_csv_has_the_same_rows_in_upload_order(client, digits):
    _, files = digits
    job = submit(client, [("scans.zip", zip_bytes(files))]).json
    response = client.get(f"/api/jobs/{job['id']}/results.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["file", "prediction", "confidence", "error"]
    assert [row["file"] for row in rows] == list(files)
    summary = {row["file"]: row for row in answers(client, job["id"])["results"]}
    for row in rows:
        assert row["prediction"] == summary[row["file"]]["prediction"]
        assert float(row["confidence"]) == pytest.approx(summary[row["file"]]["confidence"])


def test_file_names_that_spreadsheets_would_run_as_formulas_are_text_in_the_csv(client, digits):
    """A ZIP member named '=HYPERLINK(...).png' must not become a live formula when the
    CSV is opened in a spreadsheet: such cells start with ' (the JSON keeps the name)."""
    image = next(iter(digits[1].values()))
    names = ['=HYPERLINK("http://evil.example","x").png', "+cmd|calc.png", "-2+3.png", "@SUM(1).png",
             "\tA1.png", "plain-name.png"]
    job = submit(client, [("scans.zip", zip_bytes({name: image for name in names}))]).json
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/jobs/{job['id']}/results.csv").text)))
    assert [row["file"] for row in rows] == ["'" + name for name in names[:-1]] + ["plain-name.png"]
    assert sorted(row["file"] for row in answers(client, job["id"])["results"]) == sorted(names)


def test_after_gives_only_the_rows_recorded_since(client, digits):
    _, files = digits
    job = submit(client, [("scans.zip", zip_bytes(files))]).json
    whole = answers(client, job["id"])
    assert client.get(f"/api/jobs/{job['id']}?after={whole['after']}").json["results"] == []
    first_rows = client.get(f"/api/jobs/{job['id']}?after=0").json["results"]
    assert first_rows == whole["results"]
    assert client.get(f"/api/jobs/{job['id']}?after=x").status_code == 400


BAD_FILES = {
    "notes.txt": b"shopping list: milk, eggs",
    "empty.png": b"",
    "cut.png": None,  # a PNG cut in half, made in the test
    "blank.png": None,  # a picture without a digit
}


def test_each_bad_file_fails_its_own_row_with_the_single_image_apis_message(client, digits):
    _, files = digits
    good_name, good = next(iter(files.items()))
    bad = dict(BAD_FILES, **{"cut.png": good[: len(good) // 2], "blank.png": encode(np.full((200, 200), 255, np.uint8))})
    job = submit(client, [("mixed.zip", zip_bytes({good_name: good, **bad}))]).json
    summary = answers(client, job["id"])
    assert (summary["status"], summary["done"], summary["failed"]) == ("done", 5, 4)
    rows = {row["file"]: row for row in summary["results"]}
    assert rows[good_name]["error"] is None
    for name, data in bad.items():
        single = post_file(client, "/api/predict/mnist", data, filename=name)
        assert single.status_code in (400, 415)
        assert rows[name] == {"file": name, "prediction": None, "confidence": None, "error": single.json["error"]}


def test_files_and_zips_together_keep_their_names(client, digits):
    _, files = digits
    names = list(files)
    job = submit(client, [(names[0], files[names[0]]), ("more.zip", zip_bytes({names[1]: files[names[1]]}))]).json
    assert sorted(row["file"] for row in answers(client, job["id"])["results"]) == sorted(
        [names[0], f"more.zip/{names[1]}"])


def test_a_task_delivered_twice_records_each_file_once(app, client, digits):
    _, files = digits
    job = submit(client, list(files.items())).json
    with app.app_context():
        recognise_batch(job["id"], list(range(len(files))))  # a redelivery, after the work was done
        store = app.extensions["jobs"]
        store.record(job["id"], [{"position": 0, "file": "again", "prediction": "9", "confidence": 1.0, "error": None}])
    summary = answers(client, job["id"])
    assert summary["done"] == len(files) == len(summary["results"])
    assert len({row["file"] for row in summary["results"]}) == len(files)
    assert "again" not in {row["file"] for row in summary["results"]}


def test_a_job_whose_model_cannot_load_fails_with_the_reason(tmp_path, missing_weights, digits):
    app = create_app({"TESTING": True, "UPLOAD_FOLDER": str(tmp_path / "uploads"), "XCEPTION_WEIGHTS": missing_weights,
                      "JOB_FOLDER": str(tmp_path / "jobs"), "DATABASE_URL": f"sqlite:///{tmp_path}/jobs.sqlite",
                      "CELERY": {"task_always_eager": True, "task_eager_propagates": True}})
    app.extensions["models"] = ModelRegistry(tmp_path / "no-models", missing_weights)
    client = app.test_client()
    _, files = digits
    job = submit(client, list(files.items())[:2]).json
    summary = answers(client, job["id"])
    assert summary["status"] == "failed" and summary["results"] == []
    assert "train it with `python train_mnist.py --arch dense" in summary["error"]


def test_a_worker_that_cannot_read_the_files_fails_the_job_saying_why(app, client):
    """A worker machine that does not share JOB_FOLDER: the job says so instead of hanging."""
    job_id = "a-job-whose-folder-is-elsewhere"
    with app.app_context():
        app.extensions["jobs"].create(job_id, "digit", "dense", ["a.png"])
        recognise_batch(job_id, [0])
    summary = answers(client, job_id)
    assert summary["status"] == "failed"
    assert "every machine must share JOB_FOLDER" in summary["error"]


def test_unknown_jobs_are_404_and_ids_are_not_listed(client):
    response = client.get("/api/jobs/not-a-job")
    assert response.status_code == 404 and "no job with this id" in response.json["error"]
    assert client.get("/api/jobs/not-a-job/results.csv").status_code == 404
    assert client.get("/api/jobs").status_code == 405


# Bad input: a clear 400 or 413, and nothing stored


def zip_with(name, data=b"x", external_attr=None):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        if external_attr is not None:
            info.external_attr = external_attr
        archive.writestr(info, data)
    return buffer.getvalue()


BAD_ZIPS = [
    ("dot-dot", lambda: zip_with("scans/../../etc/cron.d/evil.png"), 400, "holds a name with '..'"),
    ("dot-dot, backslashes", lambda: zip_with("scans\\..\\..\\evil.png"), 400, "holds a name with '..'"),
    ("absolute", lambda: zip_with("/etc/evil.png"), 400, "holds an absolute path"),
    ("windows drive", lambda: zip_with("C:/Windows/evil.png"), 400, "holds an absolute path"),
    ("symlink", lambda: zip_with("link.png", b"/etc/passwd", (stat.S_IFLNK | 0o777) << 16), 400,
     "holds a symbolic link"),
    ("nested zip", lambda: zip_with("inner.zip", zip_bytes({"a.png": b"x"})), 400, "holds another ZIP"),
    ("nested zip, renamed", lambda: zip_with("inner.png", zip_bytes({"a.png": b"x"})), 400, "holds another ZIP"),
    ("bomb by ratio", lambda: zip_with("blank.bmp", bytes(8 * MEGABYTE)), 413, "compressed over 200:1"),
    ("bomb by many small members", lambda: zip_bytes({f"{i}.bmp": bytes(600 * 1024) for i in range(3)}), 413,
     "files are compressed over 200:1 together"),
    ("bomb by total size", lambda: zip_bytes({f"{i}.bin": os.urandom(MEGABYTE) for i in range(3)}), 413,
     "unpacks to 3 MB: the limit is 2 MB unpacked"),
    ("not a zip", lambda: b"PK\x03\x04" + os.urandom(200), 400, "is not a readable ZIP"),
    ("too many files", lambda: zip_bytes({f"{i}.png": b"x" for i in range(5)}), 413,
     "more than 4 files: the limit is 4 a job"),
    ("no images", lambda: zip_bytes({}), 400, "the job has no images"),
    ("only folders", lambda: zip_with("scans/"), 400, "the job has no images"),
]


@pytest.mark.parametrize(("make", "status", "message"), [case[1:] for case in BAD_ZIPS], ids=[c[0] for c in BAD_ZIPS])
def test_a_bad_zip_is_refused_with_nothing_stored(app, client, make, status, message):
    app.config.update(JOB_MAX_UNPACKED_BYTES=2 * MEGABYTE, JOB_MAX_FILES=4)
    response = submit(client, [("scans.zip", make())])
    assert response.status_code == status
    assert message in response.json["error"]
    assert stored_job_folders(app) == []


def test_a_zip_with_too_many_files_is_refused_before_any_is_written(tmp_path):
    """10,001 members: refused from the ZIP's directory, not after 10,000 files are written."""
    from app.jobs.unpack import JobInputRejected, Limits, unpack

    folder = tmp_path / "job"
    with pytest.raises(JobInputRejected, match="more than 4 files"):
        unpack([("scans.zip", io.BytesIO(zip_bytes({f"{i}.png": b"x" for i in range(5)})))], folder,
               Limits(max_files=4, max_unpacked_bytes=MEGABYTE, max_ratio=200))
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(("fields", "files", "status", "message"), [
    ({}, None, 400, "no files: send images, or a ZIP of them, in the multipart form field 'files'"),
    ({}, [("", b"")], 400, "the job has no images"),  # a form submitted without choosing a file
    ({"kind": "letters"}, [("a.png", b"x")], 400, "unknown kind 'letters': use kind=digit or kind=number"),
    ({"model": "vgg"}, [("a.png", b"x")], 400, "unknown model 'vgg'"),
    ({}, [(f"{i}.png", b"x") for i in range(5)], 413, "more than 4 files"),
])
def test_a_bad_form_is_refused_with_nothing_stored(app, client, fields, files, status, message):
    app.config["JOB_MAX_FILES"] = 4
    response = submit(client, files or [], **fields) if files is not None else client.post(
        "/api/jobs", data=fields, content_type="multipart/form-data")
    assert response.status_code == status
    assert message in response.json["error"]
    assert stored_job_folders(app) == []


def test_a_body_that_is_not_a_form_is_415(client):
    response = client.post("/api/jobs", data=b"{}", content_type="application/json")
    assert response.status_code == 415
    assert response.json["error"].startswith("send the images or a ZIP of them as a multipart form "
                                             "(multipart/form-data) in the field 'files'")


def test_jobs_take_up_to_job_max_bytes_while_other_routes_keep_their_limit(app, client):
    eleven_megabytes = [("big.bin", os.urandom(11 * MEGABYTE))]
    body, content_type = multipart(eleven_megabytes[0][1])
    assert client.post("/api/predict/mnist", data=body, content_type=content_type).status_code == 413
    job = submit(client, eleven_megabytes)
    assert job.status_code == 202
    assert answers(client, job.json["id"])["failed"] == 1  # not an image: its own row

    app.config["JOB_MAX_BYTES"] = 5 * MEGABYTE
    refused = submit(client, eleven_megabytes)
    assert refused.status_code == 413 and refused.json["error"] == "the upload is too large: the limit is 5 MB"


def test_the_default_limits_are_the_issues():
    from app.jobs import SETTINGS

    assert SETTINGS["JOB_MAX_BYTES"][0] == 200 * MEGABYTE
    assert SETTINGS["JOB_MAX_FILES"][0] == 10_000
    assert SETTINGS["JOB_TTL"][0] == 7 * 24 * 3600


# Housekeeping


def test_finished_jobs_and_their_files_expire_after_job_ttl(app, client, digits):
    app.config["JOB_TTL"] = 1
    _, files = digits
    old = submit(client, list(files.items())[:2]).json["id"]
    assert client.get(f"/api/jobs/{old}").status_code == 200
    assert stored_job_folders(app) == [old]
    time.sleep(1.2)
    assert client.get(f"/api/jobs/{old}").status_code == 404
    new = submit(client, list(files.items())[:1]).json["id"]  # each submission clears what expired
    assert stored_job_folders(app) == [new]
    with app.app_context():
        assert app.extensions["jobs"].job(old) is None
        assert app.extensions["jobs"].results(old) == []


# The pages


def test_the_jobs_page_has_its_form(client):
    page = client.get("/jobs").text
    for hook in ('data-testid="jobs-input"', 'data-testid="jobs-submit"', 'name="files"', "multiple"):
        assert hook in page
    assert 'href="/jobs"' in client.get("/").text  # in the navigation


def test_submitting_on_the_page_leads_to_the_jobs_page(client, digits):
    _, files = digits
    response = submit(client, [("scans.zip", zip_bytes(files))], url="/jobs", model="cnn")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).text
    for hook in ('data-testid="job-progress"', f'max="{len(files)}" value="{len(files)}"',
                 'data-testid="job-status">done<', 'data-testid="job-download"', "/results.csv"):
        assert hook in page
    assert page.count("<tr>") == len(files) + 1


def test_a_bad_zip_on_the_page_is_a_readable_page(client):
    response = submit(client, [("a.zip", zip_with("../x.png"))], url="/jobs", headers={"Accept": "text/html"})
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "holds a name with &#39;..&#39;" in response.text


@pytest.mark.parametrize(("environment", "started"), [
    ({}, True),  # the embedded default: `make run` alone runs jobs
    ({"CELERY_BROKER_URL": "redis://redis.internal:6379/0"}, False),  # workers are elsewhere: `make worker`
    ({"CELERY_BROKER_URL": "redis://redis.internal:6379/0", "JOB_EMBEDDED_WORKER": "1"}, True),
    ({"JOB_EMBEDDED_WORKER": "0"}, False),
])
def test_make_run_starts_a_jobs_worker_unless_told_or_given_a_broker(monkeypatch, environment, started):
    import runpy

    from helpers import ROOT

    for name in ("CELERY_BROKER_URL", "JOB_EMBEDDED_WORKER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert config["embedded_jobs_worker_wanted"]() is started
