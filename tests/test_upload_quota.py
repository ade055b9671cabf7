"""The upload folder's caps hold exactly: for all worker processes and threads together,
at every moment, and across restarts. To make room for a new upload, the oldest go,
whoever sent them (README, "Uploads and limits", says why)."""

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from app import create_app
from app.quota import ANSWER_SUFFIX, INCOMING, LEDGER, STORED_NAME, UploadFolder
from helpers import encode, folder_files, post_file
from benchmarks.live_server import live_server

MNIST_URL = "/api/predict/mnist"


def stored(folder):
    """The stored uploads in `folder`, by name."""
    return [name for name in folder_files(folder) if STORED_NAME.fullmatch(name)]


def disk_usage(folder):
    """(files, bytes) of the stored uploads in `folder`, as the disk has them (an upload's
    answer, kept beside it, counts with it)."""
    names = stored(folder)
    sizes = [(Path(folder) / path).stat().st_size for name in names for path in (name, name + ANSWER_SUFFIX)
             if (Path(folder) / path).exists()]
    return len(names), sum(sizes)


@pytest.fixture
def digit_png(mnist_sample):
    return encode(mnist_sample[0][0])


# The policy -------------------------------------------------------------------------


def test_the_oldest_uploads_make_room_until_both_caps_hold(tmp_path):
    folder = UploadFolder(tmp_path)
    names = [folder.store(bytes(size), "png", max_files=3, max_bytes=1000) for size in (100, 200, 300, 400)]
    assert stored(tmp_path) == sorted(names[1:])  # the file cap: 4 > 3, the oldest went
    big = folder.store(bytes(700), "png", max_files=3, max_bytes=1000)
    assert stored(tmp_path) == sorted([big])  # the byte cap: 300 + 400 + 700 > 1000, both went
    assert folder.usage() == disk_usage(tmp_path) == (1, 700)


def test_an_upload_that_can_never_fit_is_answered_but_not_kept(client, app, uploads, digit_png):
    app.config["UPLOAD_MAX_BYTES"] = len(digit_png) - 1
    response = post_file(client, MNIST_URL, digit_png)
    assert response.status_code == 200 and response.json["upload"] is None
    assert response.json["prediction"] == 2  # the first fixture digit: answered all the same
    assert uploads() == []


def test_upload_max_files_zero_keeps_no_uploads(client, app, uploads, digit_png):
    app.config["UPLOAD_MAX_FILES"] = 0
    assert post_file(client, MNIST_URL, digit_png).json["upload"] is None
    page = post_file(client, "/predict", digit_png)
    assert page.status_code == 200 and b'src="/uploads/' not in page.data and b"What the models saw" in page.data
    assert uploads() == []


# Across restarts --------------------------------------------------------------------


def restarted(tmp_path, registry, **config):
    """A new app (a new process, as far as the folder knows) on the same upload folder."""
    app = create_app({"TESTING": True, "UPLOAD_FOLDER": str(tmp_path / "uploads"), **config})
    app.extensions["models"] = registry
    return app.test_client()


def test_the_caps_hold_across_a_restart(tmp_path, registry, digit_png):
    first = [restarted(tmp_path, registry, UPLOAD_MAX_FILES=3) for _ in range(2)]
    before = [post_file(first[0], MNIST_URL, digit_png).json["upload"] for _ in range(3)]
    after = [post_file(first[1], MNIST_URL, digit_png).json["upload"] for _ in range(2)]
    assert stored(tmp_path / "uploads") == sorted(before[2:] + after)


def test_uploads_kept_before_the_ledger_are_counted_oldest_first(tmp_path, registry, digit_png):
    """A folder from before the ledger existed, 136 files over a cap of 10 (issue 14,
    finding 10), with files a crashed worker left half-written."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    old = [f"{i:032x}.png" for i in range(136)]
    for age, name in enumerate(reversed(old), start=1):  # old[0] is the oldest
        (folder / name).write_bytes(bytes(100))
        os.utime(folder / name, (time.time() - 60 * age, time.time() - 60 * age))
    for name, age in ((f"{INCOMING}crashed", 7200), (f"{INCOMING}in-flight", 1)):
        (folder / name).write_bytes(bytes(100))
        os.utime(folder / name, (time.time() - age, time.time() - age))
    new = post_file(restarted(tmp_path, registry, UPLOAD_MAX_FILES=10), MNIST_URL, digit_png).json["upload"]
    assert stored(folder) == sorted(old[-9:] + [new])
    assert f"{INCOMING}crashed" not in os.listdir(folder) and f"{INCOMING}in-flight" in os.listdir(folder)


def test_the_ledger_follows_the_folder_after_a_restart(tmp_path, registry, digit_png):
    """Files deleted by hand stop counting; a deleted ledger is rebuilt from the folder."""
    folder = tmp_path / "uploads"
    client = restarted(tmp_path, registry, UPLOAD_MAX_FILES=3)
    names = [post_file(client, MNIST_URL, digit_png).json["upload"] for _ in range(3)]
    (folder / names[0]).unlink()
    client = restarted(tmp_path, registry, UPLOAD_MAX_FILES=3)
    names.append(post_file(client, MNIST_URL, digit_png).json["upload"])
    assert stored(folder) == sorted(names[1:])  # room was left: nothing else went
    for ledger_file in folder.glob(LEDGER + "*"):
        ledger_file.unlink()
    client = restarted(tmp_path, registry, UPLOAD_MAX_FILES=3)
    names.append(post_file(client, MNIST_URL, digit_png).json["upload"])
    assert len(stored(folder)) == 3 and names[-1] in stored(folder)


# Under concurrency ------------------------------------------------------------------

CAPS = {"max_files": 10, "max_bytes": 10 * 3_000}  # either may bind: sizes are 100-5,000 bytes


def payload(i):
    return bytes(100 + (i * 997) % 4_900)


class Watcher:
    """Lists the folder as fast as it can while others store; the most it ever saw.
    Bytes are a lower bound: a file deleted between the listing and its stat is missed."""

    def __init__(self, folder):
        self.folder, self.most_files, self.most_bytes, self.looks = Path(folder), 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self):
        while not self._stop.is_set():
            files, total = 0, 0
            for entry in os.scandir(self.folder):
                if STORED_NAME.fullmatch(entry.name):
                    files += 1
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        pass
            self.most_files, self.most_bytes = max(self.most_files, files), max(self.most_bytes, total)
            self.looks += 1

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()


def assert_exactly_within_caps(path, folder, names, watcher):
    files, total = disk_usage(path)
    assert files <= CAPS["max_files"] and total <= CAPS["max_bytes"]
    assert files == CAPS["max_files"] or total > CAPS["max_bytes"] - 5_000  # full: nothing deleted early
    assert UploadFolder(path).usage() == (files, total)  # the ledger, as a new process reads it
    assert folder is None or folder.usage() == (files, total)
    assert len(set(names)) == len(names) and set(stored(path)) <= set(names)
    assert [name for name in os.listdir(path) if name.startswith(INCOMING)] == []
    assert watcher.looks > 10 and watcher.most_files <= CAPS["max_files"] and watcher.most_bytes <= CAPS["max_bytes"]


def test_threads_keep_the_caps_exactly(tmp_path):
    folder, threads, each = UploadFolder(tmp_path), 16, 25
    start = threading.Barrier(threads)

    def store_some(t):
        start.wait()
        return [folder.store(payload(t * each + i), "png", **CAPS) for i in range(each)]

    with Watcher(tmp_path) as watcher:
        results = []
        workers = [threading.Thread(target=lambda t=t: results.extend(store_some(t))) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert len(results) == threads * each
    assert_exactly_within_caps(tmp_path, folder, results, watcher)


def store_in_a_process(path, first, count, start, names):
    """One worker process: its own UploadFolder (and ledger connection), four threads."""
    folder = UploadFolder(path)
    start.wait()
    mine = []
    threads = [threading.Thread(target=lambda k=k: mine.extend(
        folder.store(payload(first + k * count + i), "png", **CAPS) for i in range(count))) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names.put(mine)


def test_processes_keep_the_caps_exactly(tmp_path):
    """As gunicorn runs the app: several worker processes, several threads in each."""
    context = multiprocessing.get_context("spawn")  # never fork a process that has TensorFlow loaded
    processes, each = 4, 20
    start, names = context.Barrier(processes + 1), context.Queue()
    workers = [context.Process(target=store_in_a_process, args=(tmp_path, p * 1000, each, start, names))
               for p in range(processes)]
    for worker in workers:
        worker.start()
    with Watcher(tmp_path) as watcher:
        start.wait(timeout=60)
        results = [name for _ in workers for name in names.get(timeout=120)]
        for worker in workers:
            worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * processes
    assert len(results) == processes * 4 * each
    assert_exactly_within_caps(tmp_path, None, results, watcher)


@pytest.mark.slow
def test_gunicorn_workers_keep_the_caps_exactly(tmp_path, mnist_sample):
    """The production server, 2 workers x 4 threads, 16 clients at once, a cap of 5 uploads."""
    from test_concurrency import HttpClient, chunks_of, run_together

    folder = tmp_path / "uploads"
    images = [encode(image) for image in mnist_sample[0][:16]]
    with live_server(folder, UPLOAD_MAX_FILES=5) as base_url:

        def client(c):
            with HttpClient(base_url) as connection:
                return [connection.upload(images[c])[2]["upload"] for _ in range(3)]

        names = [name for names in run_together(16, client) for name in names]
        # Issue 14 over the wire: the url-encoded bomb, and TF Serving JSON over the limit sent chunked.
        with HttpClient(base_url) as connection:
            started = time.perf_counter()
            status, _, answer = connection.request("POST", MNIST_URL, b"a&" * (5 * 1024 * 1024),
                                                   {"Content-Type": "application/x-www-form-urlencoded"})
            assert status == 415 and "multipart" in answer["error"] and time.perf_counter() - started < 1
        body = b'{"instances": [[' + b"0.0, " * (3 * 1024 * 1024) + b"0.0]]}"
        with HttpClient(base_url) as connection:
            status, _, answer = connection.request("POST", "/v1/models/mnist_dense:predict", chunks_of(body),
                                                   {"Content-Type": "application/json"})
            assert status == 413 and "too large" in answer["error"]
    assert len(names) == len(set(names)) == 48
    assert len(stored(folder)) == 5 and set(stored(folder)) <= set(names)
    assert UploadFolder(folder).usage() == disk_usage(folder)


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    """The disk fills up after the answer is written and before the upload is: neither stays."""
    folder = UploadFolder(tmp_path)
    folder.usage()  # the ledger exists: only uploads' files are left to look at
    real_write = folder._write

    def write_then_fill_up(path, data):
        if not path.endswith(ANSWER_SUFFIX):
            with open(path, "xb") as f:
                f.write(data[:10])
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(folder, "_write", write_then_fill_up)
    with pytest.raises(OSError):
        folder.store(b"x" * 100, "png", max_files=5, max_bytes=1000, answer=b"y" * 50)
    assert folder_files(tmp_path) == [] and folder.usage() == (0, 0)
