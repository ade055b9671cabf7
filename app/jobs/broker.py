"""The embedded default's broker: Kombu's SQLAlchemy transport on a SQLite file,
checking for tasks every 0.1 s instead of every second.

Kombu's virtual transports wait `polling_interval` whenever they have nothing to hand
out, which includes every time a worker holds all the tasks it may; at Kombu's 1 s, a
worker process ran one task a second. The SQLAlchemy transport passes every transport
option to create_engine, so the interval can't be set as an option, and Kombu takes no
import path from a URL: hence this class (which also puts SQLite in WAL mode, as the
job store does: publishing a job's tasks took 50 ms a task without), registered as the transport `jobsqlite`
(broker URL `jobsqlite+sqlite:///PATH`) when app.jobs is imported.
"""

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel, Transport

from .store import use_wal

SCHEME = "jobsqlite"


class SQLiteChannel(Channel):
    def _engine_from_config(self):
        return use_wal(super()._engine_from_config())


class SQLiteTransport(Transport):
    Channel = SQLiteChannel
    polling_interval = 0.1


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:SQLiteTransport"


def is_sql_broker(url):
    """Kombu's SQLAlchemy transport, ours or plain (sqla+...)."""
    return url.split("+", 1)[0] in ("sqla", SCHEME)
