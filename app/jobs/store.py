"""Job state: what was asked, and each file's answer, in SQL through SQLAlchemy. No Flask here.

SQLite under instance/ by default; DATABASE_URL=postgresql://... when web and worker
machines must all reach it. A file's answer is written at most once, whatever the
redeliveries: (job, position) is unique and a second write of it does nothing.
"""

import threading
import time

from sqlalchemy import (Column, Float, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint,
                        create_engine, delete, event, func, select, update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, ProgrammingError

metadata = MetaData()

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("model", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("created_at", Float, nullable=False),  # Unix time
    Column("started_at", Float),  # a worker took its first batch
    Column("finished_at", Float),  # every file answered, or the job failed
    Column("error", Text),  # why the whole job failed (a model that cannot load)
)

job_files = Table(
    "job_files", metadata,
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),  # its place in the upload; also its file's name on disk
    Column("name", Text, nullable=False),  # as the user named it: the upload's file name or the path in the ZIP
)

results = Table(
    "results", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # the order answers were recorded in
    Column("job_id", String(64), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("file", Text, nullable=False),
    Column("prediction", Text),
    Column("confidence", Float),
    Column("error", Text),
    UniqueConstraint("job_id", "position", name="one_answer_per_file"),
)

# INSERT ... ON CONFLICT DO NOTHING, which both speak.
INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def use_wal(engine):
    """SQLite shared by web and worker processes: readers don't wait for the writer, and
    a commit costs one write to the log (WAL) instead of a rewrite of the journal."""
    event.listen(engine, "connect", lambda connection, _: connection.execute("PRAGMA journal_mode=WAL"))
    return engine


def status_of(job, answered):
    if job.error is not None:
        return "failed"
    if answered >= job.total:
        return "done"
    return "running" if job.started_at is not None else "queued"


class JobStore:
    """The state store of one process. The engine is made on first use, so that a
    process that forks (gunicorn, Celery's prefork pool) never shares a connection."""

    def __init__(self, url):
        dialect = url.split(":", 1)[0].split("+", 1)[0]
        if dialect not in INSERTS:
            raise ValueError(f"DATABASE_URL {dialect}:...: use sqlite:///PATH or postgresql://...")
        self.url = url
        self._insert = INSERTS[dialect]
        self._engine = None
        self._lock = threading.Lock()

    @property
    def engine(self):
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._connect()
        return self._engine

    def _connect(self):
        if self.url.startswith("sqlite"):
            engine = use_wal(create_engine(self.url, connect_args={"timeout": 30}))
        else:
            engine = create_engine(self.url, pool_pre_ping=True)
        try:
            metadata.create_all(engine)
        except (OperationalError, ProgrammingError):  # another process created them just now
            metadata.create_all(engine)
        return engine

    def forget_connections(self):
        """In a child process after a fork: the parent's connections are not ours to use."""
        if self._engine is not None:
            self._engine.dispose(close=False)

    # Writing

    def create(self, job_id, kind, model, names):
        with self.engine.begin() as db:
            db.execute(jobs.insert().values(id=job_id, kind=kind, model=model, total=len(names), created_at=time.time()))
            db.execute(job_files.insert(), [{"job_id": job_id, "position": position, "name": name}
                                            for position, name in enumerate(names)])

    def mark_started(self, job_id):
        with self.engine.begin() as db:
            db.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.started_at.is_(None)).values(started_at=time.time()))

    def mark_failed(self, job_id, message):
        with self.engine.begin() as db:
            db.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.finished_at.is_(None))
                       .values(error=message, finished_at=time.time()))

    def record(self, job_id, rows):
        """Write each row's answer unless it is written already; finish the job with its last."""
        if not rows:
            return
        with self.engine.begin() as db:
            db.execute(self._insert(results).on_conflict_do_nothing(index_elements=["job_id", "position"]),
                       [{"job_id": job_id, **row} for row in rows])
            answered = db.scalar(select(func.count()).select_from(results).where(results.c.job_id == job_id))
            db.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.finished_at.is_(None), jobs.c.total <= answered)
                       .values(finished_at=time.time()))

    # Reading

    def job(self, job_id):
        with self.engine.connect() as db:
            return db.execute(select(jobs).where(jobs.c.id == job_id)).first()

    def unanswered(self, job_id, positions):
        """[(position, name)] of those `positions` that have no answer yet."""
        answered = select(results.c.position).where(results.c.job_id == job_id)
        query = (select(job_files.c.position, job_files.c.name)
                 .where(job_files.c.job_id == job_id, job_files.c.position.in_(positions),
                        job_files.c.position.not_in(answered))
                 .order_by(job_files.c.position))
        with self.engine.connect() as db:
            return db.execute(query).all()

    def counts(self, job_id):
        """(answered, failed) for the job."""
        query = select(func.count(), func.count(results.c.error)).where(results.c.job_id == job_id)
        with self.engine.connect() as db:
            return tuple(db.execute(query).one())

    def results(self, job_id, after=0):
        """The answers recorded after `after` (a `seq`), in the order they were recorded."""
        query = select(results).where(results.c.job_id == job_id, results.c.seq > after).order_by(results.c.seq)
        with self.engine.connect() as db:
            return db.execute(query).all()

    def unfinished(self):
        """{job id: [positions without an answer]} of every job still to finish."""
        answered = select(results.c.position).where(results.c.job_id == job_files.c.job_id)
        query = (select(job_files.c.job_id, job_files.c.position)
                 .join(jobs, jobs.c.id == job_files.c.job_id)
                 .where(jobs.c.finished_at.is_(None), job_files.c.position.not_in(answered))
                 .order_by(job_files.c.job_id, job_files.c.position))
        missing = {}
        with self.engine.connect() as db:
            for job_id, position in db.execute(query):
                missing.setdefault(job_id, []).append(position)
        return missing

    # Housekeeping

    def expire(self, ttl, now=None):
        """Delete the jobs that finished over `ttl` seconds ago; returns their ids."""
        cutoff = (time.time() if now is None else now) - ttl
        with self.engine.begin() as db:
            ids = db.scalars(select(jobs.c.id).where(jobs.c.finished_at < cutoff)).all()
            if ids:
                db.execute(delete(results).where(results.c.job_id.in_(ids)))
                db.execute(delete(job_files).where(job_files.c.job_id.in_(ids)))
                db.execute(delete(jobs).where(jobs.c.id.in_(ids)))
        return ids
