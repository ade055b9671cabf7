"""gunicorn's threaded worker, reading each whole request before a thread sees it.

gunicorn 27's gthread worker gives a connection to a thread as soon as it is accepted;
the thread waits up to 5 s for a first byte, then blocks on the request line and
headers, and the app blocks on the body. A client that sends a byte every few seconds
holds a thread for as long as it likes: 8 of them (2 workers x 4 threads) stop the
server. This worker does instead what a buffering proxy such as nginx would do in front
of it: the worker's event loop reads each request, without blocking, until its head and
body are in memory, and only then hands it to a thread, which parses and serves it from
memory. A slow client costs a socket and a buffer, not a thread. Also:

- Time limits. An idle connection (no byte of a request yet) is closed after
  `keepalive` seconds, as gunicorn does. Once a request has started, its head must be
  in within HEAD_SECONDS and the whole request within REQUEST_SECONDS, else 408.
- A body over `max_body` (the app's MAX_CONTENT_LENGTH; gunicorn.conf.py sets it) is not
  read: the request goes to the app at once, the app answers 413 without reading it,
  and the answer says `Connection: close`.
- A chunked body's framing (chunk-size lines, extensions, trailers) may take what a
  head may (`max_head`), else 413 while it arrives: without a bound, long extensions
  filled memory (300 MB in 2 s from one client) and 1-byte chunks cost gunicorn's
  chunk parser ~1.7 s of CPU per MB.
- Keep-alive tells the truth. A body that the app did not read is in memory, so it is
  always discarded in full and the connection stays usable. (gunicorn's own drain gives
  up after 64 KB and closes, after its answer has said `Connection: keep-alive`.)
- Closing lingers in the event loop. After an answer that closes the connection, what
  the client still sends is discarded for up to LINGER_SECONDS before the socket closes:
  closing with unread bytes makes the kernel reset the connection, which can destroy
  the answer before the client reads it. (gunicorn lingers too, but blocking its loop.)
- `Expect: 100-continue` is answered by the loop when the head is in and the body fits.
- Probes have threads of their own. A bodiless GET or HEAD of one of `probe_paths`
  (/health and /ready; gunicorn.conf.py sets them) goes to a small pool of its own,
  never behind uploads and model calls in the main pool: a liveness probe is answered
  in milliseconds however busy the worker is. A probe thread waits at most
  PROBE_SOCKET_SECONDS to send its answer, so that clients who stop reading (pipelining
  probes they never read) cannot hold those threads.

It serves plain HTTP/1.1 only (no TLS, no HTTP/2), which is what `make run` serves.
"""

import errno
import selectors
import socket
import time
from concurrent import futures
from functools import partial

from gunicorn import http
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

HEAD_SECONDS = 10  # request line and headers, from their first byte
REQUEST_SECONDS = 120  # the whole request, from its first byte: 10 MB at 85 KB/s
LINGER_SECONDS = 2
SLOW_ARRIVAL_SECONDS = 1  # a request that took longer to arrive is logged
THREAD_SOCKET_SECONDS = 30  # backstop: a thread never waits longer on one send or receive
# A probe's answer (under 1 KB) goes at once into an empty send buffer. When it does not,
# the client has stopped reading (pipelined probes it never reads): it gets no more.
PROBE_SOCKET_SECONDS = 0.1
DEFAULT_MAX_BODY = 16 * 1024 * 1024
RECEIVE_BYTES = 256 * 1024
NEXT_PIECE_BYTES = 64 * 1024
EXPIRY_CHECK_EVERY = 0.25
PROBE_THREADS = 2

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def canned_answer(status, message):
    """A complete HTTP/1.1 answer that closes the connection, for the event loop to send."""
    body = (message + "\n").encode()
    return (f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


REQUEST_TIMEOUT = canned_answer("408 Request Timeout", "the request did not arrive in time")
HEAD_TOO_LARGE = canned_answer("431 Request Header Fields Too Large", "the request headers are too large")
FRAMING_TOO_LARGE = canned_answer(
    "413 Content Too Large", "the chunked body's chunk-size lines, extensions and trailers are too large: send larger chunks")


class IncomingRequest:
    """The bytes of one HTTP/1.1 request as they arrive, and where the request ends.

    Only the framing is read here (Content-Length, chunked, Expect); gunicorn's parser
    reads the request properly in the thread, and refuses anything malformed. When the
    framing is one it refuses, the request is `ready` (but not `whole`) at once, so that
    it is answered without waiting for a body.
    """

    def __init__(self, max_head, max_body, started):
        self.data = bytearray()
        self.max_head, self.max_body = max_head, max_body
        self.started = started  # time.monotonic() of the first byte
        self.head_end = None  # index just past the blank line that ends the head
        self.body_length = None  # Content-Length, or None for a chunked body
        self.expects_continue = False
        self.continue_sent = False
        self.ready = False  # hand it to a thread now...
        self.whole = False  # ...with every byte of it in `data`
        self.head_too_large = False
        self.framing_too_large = False  # chunked: its sizes, extensions and trailers are over max_head
        self._searched = 0  # the head's end was not before this index
        self._next_chunk = None  # chunked: index of the next chunk-size line
        self._chunk_bytes = 0  # chunked: sum of the complete chunks' sizes

    @property
    def deadline(self):
        return self.started + (HEAD_SECONDS if self.head_end is None else REQUEST_SECONDS)

    def feed(self, data):
        self.data += data
        if self.head_end is None:
            self._find_head_end()
        if self.head_end is not None and not self.ready:
            self._find_body_end()

    def _find_head_end(self):
        start = max(0, self._searched - 3)
        end = self.data.find(b"\r\n\r\n", start)
        if end < 0:
            bare_lf = self.data.count(b"\n", self._searched) != self.data.count(b"\r\n", max(0, self._searched - 1))
            self._searched = len(self.data)
            if bare_lf:
                self.ready = True  # gunicorn refuses it at once
            elif len(self.data) > self.max_head:
                self.head_too_large = True
            return
        self.head_end = end + 4
        self._read_framing(bytes(self.data[:end]))

    def _read_framing(self, head):
        lengths, codings = [], []
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.lower(), value.strip(b" \t").lower()
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings.append(value)
            elif name == b"expect":
                self.expects_continue = value == b"100-continue"
        if not lengths and not codings:
            self.body_length = 0
        elif not codings and len(lengths) == 1 and lengths[0].isdigit():
            self.body_length = int(lengths[0])
        elif codings == [b"chunked"] and not lengths:
            self._next_chunk = self.head_end
        else:
            self.ready = True  # framing that gunicorn refuses (or too rare to buffer): answered now

    def is_probe(self, probe_paths):
        """Whether this is a bodiless GET or HEAD of one of `probe_paths` (query strings allowed),
        with nothing pipelined after it: probes don't pipeline, and a client that does is
        served like any other."""
        if not (self.whole and self.body_length == 0 and len(self.data) == self.head_end and probe_paths):
            return False
        line = bytes(self.data[:self.data.find(b"\r\n")])
        method, _, rest = line.partition(b" ")
        target = rest.partition(b" ")[0].partition(b"?")[0]
        return method in (b"GET", b"HEAD") and target.decode("latin-1") in probe_paths

    def _find_body_end(self):
        if self.body_length is None:
            self._find_last_chunk()
        elif self.body_length > self.max_body:
            self.ready = True  # the app answers 413 without reading the body
        elif len(self.data) >= self.head_end + self.body_length:
            self.ready = self.whole = True

    def _find_last_chunk(self):
        data, at = self.data, self._next_chunk
        while True:
            line_end = data.find(b"\r\n", at)
            if line_end < 0:
                self.ready = len(data) - at > 1024  # no chunk-size line is that long
                return
            size = bytes(data[at:line_end]).split(b";")[0].strip(b" \t")
            if not size or not HEXDIGITS.issuperset(size):
                self.ready = True  # gunicorn refuses it
                return
            size, start = int(size, 16), line_end + 2
            if size == 0:  # the last chunk, then trailer lines, then a blank line
                self.ready = self.whole = data[start:start + 2] == b"\r\n" or data.find(b"\r\n\r\n", start) >= 0
                self.framing_too_large = not self.ready and self._framing(len(data)) > self.max_head
                return
            if len(data) < start + size + 2:
                # Over the limit: the app reads past it from memory and answers 413.
                self.ready = self._chunk_bytes + len(data) - start > self.max_body
                return
            self._chunk_bytes += size
            at = self._next_chunk = start + size + 2
            if self._chunk_bytes > self.max_body:
                self.ready = True  # the app reads past the limit from memory and answers 413
                return
            # Framing costs memory beyond max_body, and gunicorn's parser CPU for each chunk
            # (a 1-byte chunk is 6 bytes on the wire): it may take what a head may.
            if self._framing(at) > self.max_head:
                self.framing_too_large = True
                return

    def _framing(self, end):
        """Bytes of the chunked body before `end` that are not its data (all chunks before it complete)."""
        return end - self.head_end - self._chunk_bytes


class HeldBytesUnreader(SocketUnreader):
    """gunicorn's SocketUnreader, serving the bytes handed back to it (unread) by slicing.

    gunicorn holds them in a BytesIO and copies the whole remainder twice on every
    read(size): Werkzeug's form parser reads a body 64 KB at a time, so a 2 MB phone photo
    was copied some 64 times over (24 ms), and draining an unread 2 MB body 1 KB at a
    time (keep-alive after a refusal) copied it 2,000 times. The event loop hands over
    each whole request at once, so here they are one bytes object and an offset.
    read() with no size gives the next NEXT_PIECE_BYTES at most, as a socket's recv()
    would, not all that is held: gunicorn parses the head from such pieces, and copied
    the whole body several times when given all of it."""

    def __init__(self, sock):
        super().__init__(sock)
        self.held, self.at = b"", 0  # bytes handed back, and how far they have been read

    def unread(self, data):
        back = self.at - len(data)
        if data and back >= 0 and memoryview(self.held)[back:self.at] == data:
            self.at = back  # what was just read, handed back (gunicorn does so after each head)
        else:
            self.held, self.at = bytes(data) + self.held[self.at:], 0

    def take_buffered(self):
        return self.take_held() + super().take_buffered()

    def read(self, size=None, read_ahead=None):
        if size is not None and not isinstance(size, int):
            raise TypeError("size parameter must be an int or long.")
        if size == 0:
            return b""
        available = len(self.held) - self.at
        if not available:  # nothing handed back: the socket, as gunicorn reads it
            return super().read(size, read_ahead)
        if size is None or size < 0:  # "the next piece": a head is parsed from these
            size = min(available, NEXT_PIECE_BYTES)
        if size <= available:
            self.at += size
            return self.held[self.at - size:self.at]
        data = self.take_held()
        # More than is held: the rest from the socket (and what gunicorn's buffer holds).
        rest_ahead = None if read_ahead is None else max(read_ahead - available, 0)
        return data + super().read(size - available, rest_ahead)

    def take_held(self):
        data, self.held, self.at = self.held[self.at:], b"", 0
        return data


class BufferingThreadWorker(ThreadWorker):
    """gthread, except that a thread only ever gets a request that has arrived (see above)."""

    max_body = DEFAULT_MAX_BODY  # largest body read ahead; gunicorn.conf.py sets the app's limit
    probe_paths = ()  # answered by the probe threads; gunicorn.conf.py sets them

    @classmethod
    def check_config(cls, cfg, log):
        super().check_config(cfg, log)
        if cfg.is_ssl or cfg.http_protocols != ["h1"] or cfg.http2_cleartext != "off" or cfg.protocol != "http":
            raise RuntimeError(f"{cls.__name__} serves plain HTTP/1.1 only: no TLS, HTTP/2 or uwsgi")

    def init_process(self):
        self.reading = set()  # connections whose request is arriving
        self.lingering = set()  # connections answered and closing
        self.max_head = head_limit(self.cfg)
        self._next_expiry_check = 0.0
        self.probe_pool = futures.ThreadPoolExecutor(max_workers=PROBE_THREADS, thread_name_prefix="probe")
        super().init_process()

    # Connections wait for their first byte in gunicorn's own lists (pending, then kept alive).

    def accept(self, listener):
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking
        conn.parser = http.get_parser(self.cfg, conn.sock, address)
        conn.parser.unreader = HeldBytesUnreader(conn.sock)
        conn.initialized = conn.data_ready = True  # so handle() neither waits nor makes another parser
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def on_pending_socket_readable(self, conn, client):
        self.poller.unregister(client)
        self.pending_conns.remove(conn)
        self.read_request(conn)

    def on_client_socket_readable(self, conn, client):
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.read_request(conn)

    # Reading a request in the event loop

    def read_request(self, conn, pipelined=b""):
        """Start reading the next request on `conn` (its first bytes may be in `pipelined`)."""
        conn.incoming = IncomingRequest(self.max_head, self.max_body, time.monotonic())
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
        if pipelined:
            self.take_bytes(conn, pipelined)
        else:
            self.on_request_bytes(conn)  # it is readable: that is why we are here

    def on_request_bytes(self, conn, client=None):
        try:
            data = conn.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self.take_bytes(conn, data)
        else:  # the client left before its request was complete
            self.stop_reading(conn)
            self.close_now(conn)

    def take_bytes(self, conn, data):
        incoming = conn.incoming
        incoming.feed(data)
        if incoming.ready:
            self.stop_reading(conn)
            arrival = time.monotonic() - incoming.started
            if arrival >= SLOW_ARRIVAL_SECONDS:  # the access log's time starts once it is in
                self.log.info("slow request from %s: %r took %.1f s to arrive", client_address(conn),
                              bytes(incoming.data[:incoming.data.find(b"\r\n")][:100]), arrival)
            conn.is_probe = incoming.is_probe(self.probe_paths)
            conn.parser.unreader.unread(incoming.data)
            incoming.data = None  # the parser has its copy
            self.enqueue_req(conn)
        elif incoming.head_too_large:
            self.stop_reading(conn)
            self.answer_and_close(conn, HEAD_TOO_LARGE, "431: the request head is over %d bytes" % self.max_head)
        elif incoming.framing_too_large:
            self.stop_reading(conn)
            self.answer_and_close(conn, FRAMING_TOO_LARGE,
                                  "413: the chunked body's framing is over %d bytes" % self.max_head)
        elif incoming.expects_continue and incoming.head_end is not None and not incoming.continue_sent:
            incoming.continue_sent = True
            try:
                conn.sock.send(CONTINUE)  # 25 bytes into an empty send buffer
            except OSError:
                pass  # the client is gone; reading will say so

    def stop_reading(self, conn):
        self.poller.unregister(conn.sock)
        self.reading.discard(conn)

    def enqueue_req(self, conn):
        """Hand a whole request to a thread: a probe to the probe pool, anything else to the main one."""
        pool = self.probe_pool if getattr(conn, "is_probe", False) else self.tpool
        done = pool.submit(self.handle, conn)
        done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    # In the thread: the request is in memory

    def handle_request(self, req, conn):
        conn.sock.settimeout(PROBE_SOCKET_SECONDS if getattr(conn, "is_probe", False) else THREAD_SOCKET_SECONDS)
        if not conn.incoming.whole:
            req.force_close()  # part of it is still on the network: answer, then close
        # The event loop has said "100 Continue" when the body was wanted; never say it again.
        req._expected_100_continue = False
        if getattr(conn, "is_probe", False):
            self.nr -= 1  # probes don't count toward max_requests: a flood of them must not recycle the worker
        return super().handle_request(req, conn)

    def _keepalive_after(self, conn, keepalive):
        """Discard what the app did not read of a kept-alive request: it is in memory, whatever its size."""
        return keepalive and conn.parser.finish_body()

    # Back in the event loop, after the answer

    def finish_request(self, conn, fs):
        try:
            keepalive = not fs.cancelled() and fs.result() is True
        except Exception:
            keepalive = False
        try:
            if not keepalive:
                self.close_lingering(conn)
                return
            conn.sock.setblocking(False)
            pipelined = conn.parser.unreader.take_buffered()
            if pipelined:
                self.read_request(conn, pipelined)
                return
            conn.set_timeout()
            if not self.alive:
                conn.timeout = min(conn.timeout, time.monotonic() + STOP_KEEPALIVE_LINGER)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
            self.keepalived_conns.append(conn)
        except (OSError, ValueError):  # the socket is gone
            self.close_now(conn)

    # Closing

    def answer_and_close(self, conn, answer, reason):
        self.log.info("%s from %s", reason, client_address(conn))
        try:
            conn.sock.send(answer)  # small: it fits in the send buffer
        except OSError:
            pass
        self.close_lingering(conn)

    def close_lingering(self, conn):
        """Send FIN now; close once the client has closed too, or after LINGER_SECONDS."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close_now(conn)
            return
        conn.linger_until = time.monotonic() + LINGER_SECONDS
        self.lingering.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_lingering_bytes, conn))

    def on_lingering_bytes(self, conn, client=None):
        try:
            if conn.sock.recv(RECEIVE_BYTES):
                return  # discarded; wait for more, or for the client's FIN
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.stop_lingering(conn)

    def stop_lingering(self, conn):
        self.poller.unregister(conn.sock)
        self.lingering.discard(conn)
        self.close_now(conn)

    def close_now(self, conn):
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        """gunicorn's expiry of idle connections, then ours of slow requests and lingering closes."""
        super().murder_pending()
        now = time.monotonic()
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + EXPIRY_CHECK_EVERY
        for conn in [c for c in self.reading if c.incoming.deadline < now]:
            self.stop_reading(conn)
            part = "head" if conn.incoming.head_end is None else "request"
            seconds = HEAD_SECONDS if part == "head" else REQUEST_SECONDS
            self.answer_and_close(conn, REQUEST_TIMEOUT, f"408: the {part} did not arrive within {seconds} s")
        for conn in [c for c in self.lingering if c.linger_until < now]:
            self.stop_lingering(conn)


def client_address(conn):
    return conn.client[0] if isinstance(conn.client, tuple) else conn.client


def head_limit(cfg):
    """The most bytes gunicorn's parser reads of a request head before refusing it."""
    line = cfg.limit_request_line if 0 < cfg.limit_request_line < MAX_REQUEST_LINE else MAX_REQUEST_LINE
    fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= MAX_HEADERS else MAX_HEADERS
    field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else DEFAULT_MAX_HEADERFIELD_SIZE
    return 2 + line + 2 + fields * (field_size + 2) + 4
