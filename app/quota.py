"""The upload folder and its caps, kept exactly by every worker process and thread.

gunicorn runs several worker processes, each with several threads, and they all store
uploads into one folder, which must stay within UPLOAD_MAX_FILES and UPLOAD_MAX_BYTES
at every moment and across restarts. A small SQLite database in the folder, the ledger
(.ledger.sqlite3), lists the stored files in the order they came. Each store is one
short transaction, one at a time across threads and processes: delete the oldest files
until the new one fits under both caps, move the new file into place, record it.
It adds about 0.1 ms to an upload.

The folder is the truth and the ledger an index of it. The first time a process uses
the ledger it lists the files the ledger does not (uploads kept before the ledger
existed, a worker killed between moving a file in and recording it) and forgets the
rows whose file is gone. Deleting the ledger is safe: it is rebuilt from the folder.

No Flask in here.
"""

import fcntl
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from pathlib import Path

# Generated names: uuid4 hex + extension. Always use fullmatch ("x.png\n" matches a `$`).
# gif, bmp, webp and tif are only found in folders from before uploads were re-encoded.
STORED_NAME = re.compile(r"[0-9a-f]{32}\.(png|jpg|gif|bmp|webp|tif)")
ANSWER_SUFFIX = ".json"  # an upload's answer, kept beside it (x.png -> x.png.json), counted with it
LEDGER = ".ledger.sqlite3"  # with SQLite's -wal and -shm files, and our .lock, next to it
INCOMING = ".incoming-"  # files being written, before they count
STALE_INCOMING_SECONDS = 3600  # a request takes seconds at most: older ones were left by a crash

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals (
    one INTEGER PRIMARY KEY CHECK (one = 1), files INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS count_in AFTER INSERT ON uploads
    BEGIN UPDATE totals SET files = files + 1, bytes = bytes + NEW.size; END;
CREATE TRIGGER IF NOT EXISTS count_out AFTER DELETE ON uploads
    BEGIN UPDATE totals SET files = files - 1, bytes = bytes - OLD.size; END;
"""


class UploadFolder:
    """A folder of stored uploads that never holds more than its caps; oldest out first."""

    def __init__(self, path):
        self.path = Path(path)
        # One transaction at a time: threads wait on the lock, processes on the lock file,
        # and both wake at once; never in SQLite's busy handler, which sleeps 1 ms, 2, 5...
        self._lock = threading.Lock()
        self._ledgers = {}  # pid -> (connection, lock file descriptor): never used after a fork
        weakref.finalize(self, close_own, self._ledgers)

    def store(self, data, extension, max_files, max_bytes, answer=b""):
        """Write `data` under a new generated name, and `answer` (the bytes of what the
        server answered about it, if any) beside it, first deleting the oldest uploads
        until both caps hold with them. Returns the name, or None when they cannot fit
        even in an empty folder (`max_files` 0 turns storing off)."""
        size = len(data) + len(answer)
        if max_files < 1 or size > max_bytes:
            return None
        token = uuid.uuid4().hex
        name = f"{token}.{extension}"
        # The writer's pid in the names: when a worker dies mid-write, the server removes its files.
        incoming = os.path.join(self.path, f"{INCOMING}{os.getpid()}-{token}")
        final = os.path.join(self.path, name)
        moves = [(incoming, final)]
        if answer:  # moved in first: whoever finds the upload finds its answer
            moves.insert(0, (incoming + ANSWER_SUFFIX, final + ANSWER_SUFFIX))
        try:
            for (written, _), content in zip(moves, [answer, data] if answer else [data]):
                self._write(written, content)  # outside the transaction: the slow part
            with self._transaction() as ledger:
                self._make_room(ledger, size, max_files, max_bytes)
                ledger.execute("INSERT INTO uploads (name, size) VALUES (?, ?)", (name, size))
                for written, moved in moves:
                    os.replace(written, moved)
        except BaseException:  # a write failed (a full disk), or the transaction did
            for pair in moves:  # the final names too: moved in, then the commit failed
                for path in pair:
                    Path(path).unlink(missing_ok=True)
            raise
        return name

    def remove_incoming(self, pid=None):
        """Delete files left half-written by process `pid`, which has died, or with no
        `pid` (at start-up), by any writer that is no longer running: another server
        sharing the folder (a second instance, gunicorn's USR2 upgrade) keeps its own.
        Returns how many."""
        removed = 0
        try:
            entries = os.scandir(self.path)
        except FileNotFoundError:
            return 0
        with entries:
            for entry in entries:
                if not entry.name.startswith(INCOMING):
                    continue
                writer = entry.name[len(INCOMING):].partition("-")[0]
                if (pid is None and not writer_running(writer)) or writer == str(pid):
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
        return removed

    def answer(self, name):
        """The answer stored beside the upload `name`, as bytes; None when there is none
        (never stored with one, or deleted to make room). `name` must be a STORED_NAME."""
        try:
            with open(os.path.join(self.path, name + ANSWER_SUFFIX), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def usage(self):
        """(files, bytes) stored, as the ledger counts them."""
        with self._transaction() as ledger:
            return ledger.execute("SELECT files, bytes FROM totals").fetchone()

    def _write(self, path, data):
        try:
            f = open(path, "xb")
        except FileNotFoundError:  # no folder yet
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(path, "xb")
        with f:
            f.write(data)

    def _make_room(self, ledger, size, max_files, max_bytes):
        """Delete the oldest uploads until one more of `size` bytes fits under both caps."""
        files, total = ledger.execute("SELECT files, bytes FROM totals").fetchone()
        extra_files, extra_bytes = files + 1 - max_files, total + size - max_bytes
        if extra_files <= 0 and extra_bytes <= 0:
            return
        oldest = ledger.execute("SELECT id, name, size FROM uploads ORDER BY id")
        victims = []
        for row_id, name, file_size in oldest:
            victims.append((row_id, name))
            extra_files, extra_bytes = extra_files - 1, extra_bytes - file_size
            if extra_files <= 0 and extra_bytes <= 0:
                break
        oldest.close()
        ledger.executemany("DELETE FROM uploads WHERE id = ?", [(row_id,) for row_id, _ in victims])
        for _, name in victims:
            for path in (name, name + ANSWER_SUFFIX):
                try:
                    os.unlink(os.path.join(self.path, path))
                except FileNotFoundError:  # deleted by hand, a crash before its commit, or no answer
                    pass

    @contextmanager
    def _transaction(self):
        """The ledger in a write transaction that no other thread or process shares;
        committed when the block ends, rolled back if it raises."""
        with self._lock:
            opened = self._ledgers.get(os.getpid())
            if opened is None:
                opened = self._ledgers[os.getpid()] = self._open()
            ledger, lock_file = opened
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                ledger.execute("BEGIN IMMEDIATE")
                try:
                    yield ledger
                    ledger.execute("COMMIT")
                except BaseException:
                    if ledger.in_transaction:
                        ledger.execute("ROLLBACK")
                    raise
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _open(self):
        """(connection, lock file) for this process, the ledger reconciled with the folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = os.path.join(self.path, LEDGER + ".lock")
        lock_file = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # switching to WAL wants the database to itself
        try:
            ledger = sqlite3.connect(os.path.join(self.path, LEDGER), timeout=30,
                                     isolation_level=None, check_same_thread=False)
            ledger.execute("PRAGMA journal_mode = WAL")  # a commit appends to a log ...
            ledger.execute("PRAGMA synchronous = NORMAL")  # ... and does not wait for the disk
            ledger.executescript(SCHEMA)
            ledger.execute("BEGIN IMMEDIATE")
            try:
                self._reconcile(ledger)
                ledger.execute("COMMIT")
            except BaseException:
                ledger.execute("ROLLBACK")
                raise
        except BaseException:
            os.close(lock_file)
            raise
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
        return ledger, lock_file

    def _reconcile(self, ledger):
        """Make the ledger list exactly the stored files in the folder; delete stale incoming files."""
        listed = {name for (name,) in ledger.execute("SELECT name FROM uploads")}
        found, answers = {}, {}
        for entry in os.scandir(self.path):
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            if STORED_NAME.fullmatch(entry.name):
                found[entry.name] = (stat.st_mtime_ns, stat.st_size)
            elif entry.name.endswith(ANSWER_SUFFIX) and STORED_NAME.fullmatch(entry.name[:-len(ANSWER_SUFFIX)]):
                answers[entry.name[:-len(ANSWER_SUFFIX)]] = (entry.path, stat.st_size)
            elif entry.name.startswith(INCOMING) and time.time() - stat.st_mtime > STALE_INCOMING_SECONDS:
                Path(entry.path).unlink(missing_ok=True)
        for name, (path, size) in answers.items():
            if name in found:  # an answer counts with its upload; without one, it is a leftover
                found[name] = (found[name][0], found[name][1] + size)
            else:
                Path(path).unlink(missing_ok=True)
        ledger.executemany("DELETE FROM uploads WHERE name = ?", [(name,) for name in listed - found.keys()])
        unlisted = sorted((found[name][0], name) for name in found.keys() - listed)  # oldest first
        ledger.executemany("INSERT INTO uploads (name, size) VALUES (?, ?)",
                           [(name, found[name][1]) for _, name in unlisted])


def writer_running(writer):
    """Whether the process named in a half-written file's name is alive."""
    if not writer.isdigit():
        return False  # from before writers were named: the server that wrote it has stopped
    try:
        os.kill(int(writer), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def close_own(ledgers):
    """Close this process's ledger connection and lock file (not those of a parent process)."""
    opened = ledgers.pop(os.getpid(), None)
    if opened:
        connection, lock_file = opened
        connection.close()
        os.close(lock_file)
