"""Where a request ends, as the worker's event loop sees it while the bytes arrive: a
thread gets a request only once it is `ready`, and keeps the connection alive only when
it was `whole` (every byte in memory). Over real HTTP: test_live_server.py."""

from unittest import mock

import pytest
from gunicorn.http.unreader import SocketUnreader
from hypothesis import given, settings
from hypothesis import strategies as st

import buffering_worker
from buffering_worker import HeldBytesUnreader, IncomingRequest

MAX_HEAD, MAX_BODY = 1000, 100


def arriving(*pieces, max_body=MAX_BODY):
    """An IncomingRequest fed `pieces` in turn."""
    incoming = IncomingRequest(MAX_HEAD, max_body, started=0.0)
    for piece in pieces:
        incoming.feed(piece)
    return incoming


def post(body=b"", *headers):
    return b"POST /api/predict/mnist HTTP/1.1\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def test_a_request_without_a_body_is_whole_once_its_head_is_in():
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    for cut in range(len(head)):
        assert not arriving(head[:cut]).ready
    incoming = arriving(*(head[i:i + 1] for i in range(len(head))))  # a byte at a time
    assert incoming.ready and incoming.whole


def test_a_body_with_a_length_is_whole_once_all_of_it_is_in():
    request = post(b"x" * 50, b"Content-Length: 50")
    assert not arriving(request[:-1]).ready
    assert arriving(request[:-1], request[-1:]).whole
    assert arriving(request + b"GET /next HTTP/1.1\r\n").whole  # a pipelined request's start stays with it


def test_a_chunked_body_is_whole_after_its_last_chunk_and_trailers():
    chunks = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n"
    request = post(chunks, b"Transfer-Encoding: chunked")
    assert not arriving(request).ready
    assert arriving(request + b"\r\n").whole
    assert not arriving(request + b"Trailer: 1\r\n").ready
    assert arriving(request + b"Trailer: 1\r\n\r\n").whole


@pytest.mark.parametrize(("request_bytes", "why"), [
    (post(b"", b"Content-Length: 101"), "declared over the limit: the app answers 413 without reading"),
    (post(b"65\r\n" + b"x" * 101, b"Transfer-Encoding: chunked"), "chunked, more than the limit received"),
    (post(b"", b"Content-Length: 5", b"Content-Length: 6"), "two lengths: gunicorn refuses it"),
    (post(b"", b"Content-Length: 5", b"Transfer-Encoding: chunked"), "length and chunked: refused"),
    (post(b"", b"Content-Length: -5"), "not a length: refused"),
    (post(b"", b"Transfer-Encoding: gzip"), "not chunked: refused"),
    (post(b"zz\r\n", b"Transfer-Encoding: chunked"), "not a chunk size: refused"),
    (b"GET / HTTP/1.1\nHost: x\n", "bare LF: refused"),
])
def test_a_request_answered_without_its_body_is_ready_at_once_but_not_whole(request_bytes, why):
    incoming = arriving(request_bytes)
    assert incoming.ready and not incoming.whole, why


def test_a_head_over_the_limit_is_refused_without_waiting_for_its_end():
    incoming = arriving(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * MAX_HEAD)
    assert incoming.head_too_large and not incoming.ready


@pytest.mark.parametrize(("framing", "why"), [
    (b"1;ext=" + b"e" * 200 + b"\r\nx\r\n", "long chunk extensions: a few bytes of body, a megabyte on the wire"),
    (b"1\r\nx\r\n", "one-byte chunks: gunicorn's chunk parser costs microseconds each"),
])
def test_a_chunked_body_whose_framing_is_over_the_head_limit_is_refused_while_it_arrives(framing, why):
    start = post(b"", b"Transfer-Encoding: chunked")
    most = MAX_HEAD // (len(framing) - 1)  # chunks whose framing (all but their 1 byte of data) fits in a head
    assert not arriving(start, framing * most, max_body=MAX_HEAD).framing_too_large
    incoming = arriving(start, framing * (most + 1), max_body=MAX_HEAD)
    assert incoming.framing_too_large and not incoming.ready, why
    assert arriving(start, b"40\r\n" + b"x" * 64 + b"\r\n" + b"0\r\n\r\n", max_body=MAX_HEAD * 10).whole  # big chunks: fine


def test_complete_chunks_over_the_body_limit_are_ready_at_once():
    # Each piece ends where a chunk ends, as a client can arrange: no chunk is ever part-way.
    incoming = arriving(post(b"", b"Transfer-Encoding: chunked"), *[b"20\r\n" + b"x" * 32 + b"\r\n"] * 4)
    assert incoming.ready and not incoming.whole


def test_trailers_over_the_head_limit_are_refused_without_waiting_for_their_end():
    incoming = arriving(post(b"1\r\nx\r\n0\r\n", b"Transfer-Encoding: chunked"), b"X-Trailer: t\r\n" * 100)
    assert incoming.framing_too_large and not incoming.ready


def test_a_client_that_expects_100_continue_is_noticed_once_its_head_is_in():
    incoming = arriving(post(b"", b"Content-Length: 50", b"Expect: 100-continue"))
    assert incoming.expects_continue and incoming.head_end is not None and not incoming.ready


def test_the_deadline_is_short_for_the_head_and_longer_for_the_body():
    from buffering_worker import HEAD_SECONDS, REQUEST_SECONDS

    assert arriving(b"POST / HTTP/1.1\r\n").deadline == HEAD_SECONDS
    assert arriving(post(b"", b"Content-Length: 50")).deadline == REQUEST_SECONDS


# The bytes handed to a thread: HeldBytesUnreader must read exactly as gunicorn's own
# unreader does, only without copying the remainder on every read.

class TrickleSocket:
    """A socket whose recv() gives at most `step` bytes of `data` at a time, then b""."""

    def __init__(self, data, step):
        self.data, self.step = data, step

    def recv(self, size):
        piece, self.data = self.data[:min(size, self.step)], self.data[min(size, self.step):]
        return piece


reads = st.one_of(
    st.tuples(st.just("read"), st.one_of(st.none(), st.integers(-1, 300)), st.one_of(st.none(), st.integers(0, 600))),
    st.tuples(st.just("unread"), st.binary(max_size=50), st.none()),
    st.tuples(st.just("unread what was just read"), st.integers(0, 300), st.none()),
    st.tuples(st.just("take_buffered"), st.none(), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(handed=st.binary(max_size=400), on_socket=st.binary(max_size=400), step=st.integers(1, 64),
       piece=st.sampled_from([1, 7, 64, buffering_worker.NEXT_PIECE_BYTES]), operations=st.lists(reads, max_size=25))
def test_held_bytes_read_exactly_as_gunicorns_unreader_reads_them(handed, on_socket, step, piece, operations):
    ours, theirs = HeldBytesUnreader(TrickleSocket(on_socket, step)), SocketUnreader(TrickleSocket(on_socket, step))
    for unreader in (ours, theirs):
        unreader.unread(handed)
    last = b""
    # Small pieces, so that reads without a size reach the cap on these short inputs.
    with mock.patch.object(buffering_worker, "NEXT_PIECE_BYTES", piece):
        for operation, argument, read_ahead in operations:
            if operation == "read" and (argument is None or argument < 0):
                # "The next piece": ours may be shorter; the rest stays next in line.
                last, whole = ours.read(argument, read_ahead), theirs.read(argument, read_ahead)
                assert whole.startswith(last) and (last or not whole)
                theirs.unread(whole[len(last):])
            elif operation == "read":
                last = ours.read(argument, read_ahead)
                assert last == theirs.read(argument, read_ahead)
            elif operation == "unread":
                ours.unread(argument), theirs.unread(argument)
            elif operation == "unread what was just read":  # as gunicorn does after a head: moves the offset back
                ours.unread(last[-argument:] if argument else b""), theirs.unread(last[-argument:] if argument else b"")
            else:
                assert ours.take_buffered() == theirs.take_buffered()
        assert ours.read(10_000) == theirs.read(10_000)  # and what is left


def test_a_phone_photo_read_64_kb_at_a_time_comes_back_whole_then_the_socket():
    body = bytes(range(256)) * 8192  # 2 MB, a phone photo
    unreader = HeldBytesUnreader(TrickleSocket(b"GET /next", 1024))
    unreader.unread(body)
    pieces = []
    while len(pieces) * 65536 < len(body):
        pieces.append(unreader.read(65536))
    assert b"".join(pieces) == body
    assert unreader.read(None) == b"GET /next"  # then the socket, as before
