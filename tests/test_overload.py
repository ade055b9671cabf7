"""A classroom at once: each model's place in line, shedding past it (503 + Retry-After),
dynamic batching (each caller gets its own rows, the same answers as unbatched), /ready,
and over real HTTP: /health and /ready answered while every request thread is busy, a
full queue answered at once, half-written uploads removed at start-up."""

import fcntl
import http.client
import json
import os
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from app.batching import Admission, DynamicBatcher, ServerBusy
from app.models import DIGIT_MODELS, ModelRegistry
from app.quota import LEDGER
from app.samples import STRAIGHT_DIGITS, draw_on_canvas, multipart, png_bytes
from benchmarks.live_server import live_server
from helpers import RecordingModel, batched_while_busy, call_from_threads, post_file, queued


# Dynamic batching -----------------------------------------------------------------


def test_a_lone_call_runs_at_once_in_a_batch_of_its_own():
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch=8, max_wait=1.0, admission=Admission("m", 4, 0.01))
    started = time.monotonic()
    assert np.array_equal(batcher(np.array([[1.0, 2.0, 3.0]])), [[3.0, 5.0, 7.0]])
    assert time.monotonic() - started < 0.5  # it did not wait out max_wait: nobody was on the way
    assert model.calls == [1] and batcher.batches == 1


def test_callers_who_arrive_while_the_model_is_busy_run_together_and_each_gets_its_own_rows():
    # Twelve callers, with 1 to 3 rows each, all different.
    inputs = [np.arange(3 * rows, dtype=np.float32).reshape(rows, 3) + 100 * i
              for i, rows in enumerate([1, 2, 3] * 4)]
    outputs, errors, calls = batched_while_busy(RecordingModel(), inputs)
    assert errors == [None] * len(inputs)
    for given, answer in zip(inputs, outputs):
        assert np.array_equal(answer, given * 2 + 1)
    assert calls == [1, sum(len(i) for i in inputs)]  # the twelve ran as one batch


def test_a_batch_holds_at_most_max_batch_rows_and_the_rest_run_next():
    model = RecordingModel(hold_first=True)
    batcher = DynamicBatcher(model, max_batch=4)
    first, _, _ = call_from_threads(batcher, [np.zeros((1, 3))])
    model.started.wait(5)
    inputs = [np.full((1, 3), float(i)) for i in range(10)]
    threads, outputs, errors = call_from_threads(batcher, inputs)
    queued(batcher, len(inputs))
    model.release.set()
    for thread in first + threads:
        thread.join(10)
    assert model.calls == [1, 4, 4, 2]
    assert errors == [None] * 10 and all(np.array_equal(o, i * 2 + 1) for o, i in zip(outputs, inputs))


def test_a_failed_batch_is_run_again_a_caller_at_a_time_so_only_the_cause_fails():
    model = RecordingModel(hold_first=True, fail_when=lambda batch: (batch == 13).any())
    batcher = DynamicBatcher(model, max_batch=2)
    first, _, _ = call_from_threads(batcher, [np.zeros((1, 3))])
    model.started.wait(5)
    inputs = [np.full((1, 3), 13.0), np.full((1, 3), 1.0), np.full((1, 3), 2.0), np.full((1, 3), 3.0)]
    threads = []
    for given in inputs:  # one at a time, so that the first batch is surely [13, 1]
        new, outputs_part, errors_part = call_from_threads(batcher, [given])
        threads.append((new[0], outputs_part, errors_part))
        queued(batcher, len(threads))
    model.release.set()
    for thread, _, _ in threads:
        thread.join(10)
    first[0].join(10)
    errors = [e[0] for _, _, e in threads]
    assert [type(e).__name__ if e else None for e in errors] == ["ValueError", None, None, None]
    assert np.array_equal(threads[1][1][0], [[3.0, 3.0, 3.0]]) and np.array_equal(threads[3][1][0], [[7.0, 7.0, 7.0]])
    assert model.calls == [1, 2, 1, 1, 2]  # [13, 1] failed, then 13 alone (failed) and 1 alone; then [2, 3]
    assert batcher(np.ones((1, 3))).tolist() == [[3.0, 3.0, 3.0]]  # and the model still runs


def test_a_model_answering_the_wrong_number_of_rows_never_mixes_answers():
    # One row back for a batch of three: slicing it would give the second and third
    # callers empty (or, worse, someone else's) rows. The batch fails, and each caller
    # runs alone: one row for one row, its own.
    def first_row_only(batch):
        return (batch * 2 + 1)[:1]

    first_row_only.input_shape = (3,)
    inputs = [np.full((1, 3), float(i)) for i in range(3)]
    outputs, errors, calls = batched_while_busy(first_row_only, inputs)
    assert calls == [1, 3, 1, 1, 1]
    assert errors == [None] * 3
    assert [o.tolist() for o in outputs] == [[[1.0] * 3], [[3.0] * 3], [[5.0] * 3]]


def test_the_lead_passes_on_even_when_handing_out_the_answers_fails():
    # A 0-d answer cannot be sliced per caller; before, that left the batcher "running"
    # with nobody leading, and every later caller (and its place in line) waited forever.
    def unsliceable_when_batched(batch):
        return np.float32(0) if len(batch) > 1 else batch * 2 + 1

    unsliceable_when_batched.input_shape = (3,)
    model = RecordingModel(hold_first=True, function=unsliceable_when_batched)
    batcher = DynamicBatcher(model, max_batch=8)
    first, _, _ = call_from_threads(batcher, [np.zeros((1, 3))])
    model.started.wait(5)
    threads, outputs, errors = call_from_threads(batcher, [np.ones((1, 3)), np.ones((1, 3))])
    queued(batcher, 2)
    model.release.set()
    for thread in first + threads:
        thread.join(10)
    later, later_outputs, later_errors = call_from_threads(batcher, [np.full((1, 3), 4.0)])
    later[0].join(10)
    assert not any(thread.is_alive() for thread in first + threads + later)
    assert errors == [None, None] and [o.tolist() for o in outputs] == [[[3.0] * 3]] * 2  # each again alone
    assert model.calls == [1, 2, 1, 1, 1]
    assert later_errors == [None] and later_outputs[0].tolist() == [[9.0, 9.0, 9.0]]


def test_a_batch_waits_a_moment_for_a_request_still_on_its_way_but_no_longer():
    admission = Admission("m", 4, 0.01)
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch=8, max_wait=2.0, admission=admission)
    on_its_way = threading.Event()

    def request(delay, rows):
        with admission.admitted():
            on_its_way.set()
            time.sleep(delay)  # decoding
            return batcher(np.ones((rows, 3)))

    late = threading.Thread(target=request, args=(0.2, 2))
    late.start()
    on_its_way.wait(5)
    started = time.monotonic()
    request(0.0, 1)  # leads, and waits for the late one, which is admitted and decoding
    waited = time.monotonic() - started
    late.join(10)
    assert model.calls == [3] and 0.1 < waited < 1.9


def test_admission_refuses_past_the_limit_and_counts_what_it_shed():
    admission = Admission("xception", limit=2, seconds_per_request=0.4)
    with admission.admitted(), admission.admitted():
        with pytest.raises(ServerBusy) as busy:
            with admission.admitted():
                pass
        assert busy.value.retry_after == 1 and "busy" in str(busy.value)
        assert admission.state() == {"in_flight": 2, "limit": 2, "shed": 1}
    with admission.admitted():  # places come back when requests end
        assert admission.in_flight == 1
    assert admission.state() == {"in_flight": 0, "limit": 2, "shed": 1}


def test_the_batched_cnn_gives_each_request_the_answer_it_would_get_alone(registry, mnist_sample):
    """Real digits, all different, through the real CNN: batched answers equal unbatched ones
    (BLAS sums a batch of 20 in another order than a batch of 1: equal to float32 rounding)."""
    runner = registry.digit("cnn").model
    digits = mnist_sample[0][:20].astype(np.float32)[..., None] / 255
    outputs, errors, calls = batched_while_busy(runner, [digit[None] for digit in digits])
    assert errors == [None] * 20 and calls == [1, 20]
    for digit, batched in zip(digits, outputs):
        alone = runner(digit[None])
        assert batched.argmax() == alone.argmax()
        np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)


# Shedding through the app -----------------------------------------------------------

DIGIT_PNG = png_bytes(draw_on_canvas(STRAIGHT_DIGITS["vertical 1"][1]))
BUSY_ROUTES = [  # (model whose line is full, method, path, extra form fields, JSON or page)
    ("dense", "/api/predict/mnist", {"model": "dense"}, "json"),
    ("cnn", "/api/predict/mnist", {"model": "cnn"}, "json"),
    ("xception", "/api/predict/xception", {}, "json"),
    ("cnn", "/predict", {}, "page"),
    ("dense", "/predict", {}, "page"),
    ("xception", "/xception", {}, "page"),
]


@pytest.mark.parametrize(("model", "path", "fields", "kind"), BUSY_ROUTES)
def test_past_a_models_limit_a_request_gets_503_busy_with_retry_after_at_once(
        client, registry, uploads, model, path, fields, kind):
    admission = registry.admission(model)
    shed_before = admission.shed
    with hold_every_place(admission):
        response = post_file(client, path, DIGIT_PNG, "digit.png", **fields)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    if kind == "json":
        what = "photos" if model == "xception" else "digits"
        assert response.json["error"] == ("the server is busy: it is already recognising as many "
                                          f"{what} as it takes at once ({admission.limit}); try again in "
                                          f"{response.headers['Retry-After']} s")
    else:
        assert "the server is busy" in response.get_data(as_text=True).lower()
    assert admission.shed == shed_before + 1
    assert uploads() == []  # refused before it was decoded, and nothing kept


def test_the_tf_serving_route_is_shed_the_same_way(client, registry):
    with hold_every_place(registry.admission("dense")):
        response = client.post("/v1/models/mnist_dense:predict", json={"instances": [[0.0] * 784]})
    assert response.status_code == 503 and "busy" in response.json["error"]
    assert int(response.headers["Retry-After"]) >= 1


class hold_every_place:
    """Take every place in a model's line for the duration of the block."""

    def __init__(self, admission):
        self.admission = admission
        self.places = []

    def __enter__(self):
        for _ in range(self.admission.limit - self.admission.in_flight):
            place = self.admission.admitted()
            place.__enter__()
            self.places.append(place)

    def __exit__(self, *exc):
        for place in reversed(self.places):
            place.__exit__(None, None, None)


def test_ready_says_200_when_the_digit_models_are_loaded_and_their_lines_not_full(client, registry):
    registry.warm_up()
    response = client.get("/ready")
    assert response.status_code == 200 and response.json["status"] == "ready"
    assert set(response.json["queues"]) == {"dense", "cnn", "xception"}
    with hold_every_place(registry.admission("cnn")):
        busy = client.get("/ready")
    assert busy.status_code == 503 and busy.json["reasons"] == ["the cnn queue is full (32 of 32)"]
    with hold_every_place(registry.admission("xception")):  # Xception sheds its own requests only
        assert client.get("/ready").status_code == 200


def test_ready_says_503_until_the_digit_models_are_loaded(app, tmp_path):
    app.extensions["models"] = ModelRegistry(tmp_path / "no-models")
    response = app.test_client().get("/ready")
    assert response.status_code == 503
    assert response.json["reasons"] == [f"the {name} digit model is not loaded" for name in DIGIT_MODELS]


def test_half_written_uploads_of_a_dead_process_are_removed_and_no_others(app):
    folder = app.extensions["uploads"]
    folder.path.mkdir(parents=True)
    dead = 2 ** 22 + 7  # above Linux's default pid_max: never a running process
    alive = os.getpid()  # as if another server shared the folder
    names = [f".incoming-{dead}-aaaa", f".incoming-{dead}-bbbb", f".incoming-{alive}-cccc", ".incoming-dddd",
             "0" * 32 + ".png"]
    for name in names:
        (folder.path / name).write_bytes(b"x")
    assert folder.remove_incoming(pid=alive) == 1  # that process has died (gunicorn's child_exit)
    (folder.path / f".incoming-{alive}-cccc").write_bytes(b"x")
    assert folder.remove_incoming() == 3  # start-up: every writer that is not running
    assert sorted(p.name for p in folder.path.iterdir()) == [f".incoming-{alive}-cccc", "0" * 32 + ".png"]


# Over real HTTP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """One worker with two request threads, a CNN line of one, and a half-written upload
    left behind by an earlier run; never recycled (a flood of probes would reach
    max_requests, and the worker's restart is not what these tests look at)."""
    folder = tmp_path_factory.mktemp("overload") / "uploads"
    folder.mkdir()
    # Written by a process that cannot be running: PID 4242 could be (this machine's pid_max is
    # 32768), and then start-up rightly keeps its file, as a fresh clone's CI run once found.
    (folder / f".incoming-{2 ** 22 + 7}-0123456789abcdef").write_bytes(b"half an upload")
    with live_server(folder, WEB_CONCURRENCY=1, GUNICORN_THREADS=2, CNN_QUEUE_LIMIT=1,
                     GUNICORN_CMD_ARGS="--max-requests 0") as base_url:
        yield base_url, folder


def request(base_url, method, path, body=None, headers=None):
    """(status, headers, JSON body, seconds) of one request on a fresh connection."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    started = time.perf_counter()
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read()), \
            time.perf_counter() - started
    finally:
        connection.close()


@contextmanager
def stalled_disk(folder):
    """Hold the upload folder's lock (app/quota.py), as a stalled disk would: every request
    that reaches the point of keeping its upload waits there, holding its thread."""
    lock_file = os.open(folder / (LEDGER + ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        os.close(lock_file)


def post_digit(base_url, model):
    body, content_type = multipart(DIGIT_PNG, "digit.png", model=model)
    return request(base_url, "POST", "/api/predict/mnist", body, {"Content-Type": content_type})


def while_stalled(server, model, count, probe):
    """With the disk stalled, start `count` digit uploads for `model`; once they hold their
    threads, call `probe()`. (its answer, the uploads' answers once the disk is back)."""
    base_url, folder = server
    results = []
    threads = [threading.Thread(target=lambda: results.append(post_digit(base_url, model))) for _ in range(count)]
    with stalled_disk(folder):
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # they are in, decoded and answered by the model, waiting to store
        answer = probe()
        assert not results, "an upload was answered while the disk was stalled"
    for thread in threads:
        thread.join(60)
    return answer, results


@pytest.mark.slow
def test_health_and_ready_answer_at_once_while_every_request_thread_is_busy(small_server):
    base_url, _ = small_server

    def probes():
        return [request(base_url, "GET", path) for path in ("/health", "/ready", "/health")]

    answers, results = while_stalled(small_server, "dense", 2, probes)  # two requests, two threads
    for status, _, body, seconds in answers:
        assert status == 200 and seconds < 0.5, (status, body, seconds)
    assert [(status, body["prediction"]) for status, _, body, _ in results] == [(200, 1), (200, 1)]


@pytest.mark.slow
def test_a_full_line_answers_503_busy_at_once_with_retry_after(small_server):
    base_url, _ = small_server

    def second_cnn_request_and_readiness():
        return post_digit(base_url, "cnn"), request(base_url, "GET", "/ready")

    (busy, ready), results = while_stalled(small_server, "cnn", 1, second_cnn_request_and_readiness)
    status, headers, body, seconds = busy
    assert status == 503 and "the server is busy" in body["error"] and seconds < 0.5
    assert int(headers["Retry-After"]) >= 1
    assert ready[0] == 503 and ready[2]["reasons"] == ["the cnn queue is full (1 of 1)"]
    assert [status for status, *_ in results] == [200]  # the admitted one was answered
    assert request(base_url, "GET", "/ready")[0] == 200  # and the line is free again
    assert post_digit(base_url, "cnn")[0] == 200


@pytest.mark.slow
def test_uploads_left_half_written_by_an_earlier_run_are_removed_at_start_up(small_server):
    _, folder = small_server
    assert not list(folder.glob(".incoming-*"))


@pytest.mark.slow
def test_clients_that_pipeline_probes_and_never_read_the_answers_cannot_hold_the_probe_threads(small_server):
    # Each of these clients sends /health after /health and reads nothing: soon the
    # server can send it no more answers. The probe threads (two) must not be stuck
    # sending to them: meanwhile, a probe on a fresh connection is answered at once.
    base_url, _ = small_server
    host, port = base_url.removeprefix("http://").split(":")
    probes = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    deaf_clients = [socket.create_connection((host, int(port))) for _ in range(3)]

    def send_and_never_read(deaf):
        try:
            while True:
                deaf.sendall(probes)
        except OSError:  # closed by the test, or by the server
            pass

    senders = [threading.Thread(target=send_and_never_read, args=(deaf,), daemon=True) for deaf in deaf_clients]
    for sender in senders:
        sender.start()
    answers = []
    try:
        deadline = time.monotonic() + 40  # the server's send buffers fill within seconds
        while time.monotonic() < deadline:
            answers.append(request(base_url, "GET", "/health"))
            time.sleep(0.25)
    finally:
        for deaf in deaf_clients:
            deaf.close()
    slowest = max(seconds for _, _, _, seconds in answers)
    assert {status for status, *_ in answers} == {200} and slowest < 1, slowest
