"""Form parsing: FreshBoundaryDecoder (uploads.py) must find what Werkzeug's own
MultipartDecoder finds, for any boundary and any bytes, arriving in any pieces.
Werkzeug's decoder, built with its own patterns, is the oracle throughout."""

import io

from hypothesis import example, given, settings
from hypothesis import strategies as st
from werkzeug.sansio.multipart import Epilogue, MultipartDecoder, NeedData

from app.samples import STRAIGHT_DIGITS, draw_on_canvas, multipart, png_bytes
from app.uploads import BoundarySearch, FreshBoundaryDecoder

BOUNDARY_CHARS = "-'()+_,./:=? aZ09"
boundaries = st.text(alphabet=BOUNDARY_CHARS, min_size=1, max_size=12).map(str.encode)
# Bytes made of what a boundary search can trip on: dashes, line breaks, spaces and tabs,
# form feeds, and the boundary itself.
pieces = st.sampled_from([b"-", b"--", b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x0c", b"x", b"BOUNDARY"])


def found(match):
    return None if match is None else (match.start(), match.end(), bytes(match.group(1)))


@settings(max_examples=1500, deadline=None)
@given(boundary=boundaries, parts=st.lists(pieces, max_size=30), position=st.integers(0, 40))
@example(boundary=b"b", parts=[b"x", b"\r\n", b"--", b"BOUNDARY", b"\r\n"], position=2)  # starting inside a CRLF
@example(boundary=b"b", parts=[b"\n\r", b"--", b"BOUNDARY", b"--"], position=0)
def test_the_boundary_search_finds_what_werkzeugs_patterns_find(boundary, parts, position):
    buffer = bytearray(b"".join(parts).replace(b"BOUNDARY", boundary))
    theirs, ours = MultipartDecoder(boundary), FreshBoundaryDecoder(boundary)
    assert type(ours.preamble_re) is not type(theirs.preamble_re)  # not Werkzeug's patterns again
    for pattern in ("preamble_re", "boundary_re"):
        expected = found(getattr(theirs, pattern).search(buffer, position))
        assert found(getattr(ours, pattern).search(buffer, position)) == expected
    assert found(ours.boundary_re.search(buffer)) == found(theirs.boundary_re.search(buffer))


def test_the_decoder_is_set_up_as_werkzeugs_is_but_for_its_patterns():
    theirs, ours = vars(MultipartDecoder(b"b0und", 1000, max_parts=5)), vars(FreshBoundaryDecoder(b"b0und", 1000, max_parts=5))
    assert ours.keys() == theirs.keys()  # a Werkzeug upgrade that adds state fails here
    assert {k: v for k, v in ours.items() if not k.endswith("_re")} == {k: v for k, v in theirs.items() if not k.endswith("_re")}


def test_boundaries_outside_rfc_2046_get_werkzeugs_own_patterns():
    # A CR or LF can reach the boundary through RFC 2231's encoded parameters.
    assert type(FreshBoundaryDecoder(b"a\rb").boundary_re) is type(MultipartDecoder(b"a\rb").boundary_re)


def events(decoder_class, boundary, body, piece_size, decoder=None):
    """Everything the decoder makes of `body` fed `piece_size` bytes at a time, or the error it raised."""
    decoder = decoder or decoder_class(boundary, 10_000, max_parts=10)
    return decoded(decoder, [body[start : start + piece_size] for start in range(0, len(body), piece_size)])


def decoded(decoder, pieces):
    """Everything `decoder` makes of `pieces` (then the end of the body), or the error it raised."""
    seen = []
    try:
        for piece in [*pieces, None]:
            decoder.receive_data(piece)
            event = decoder.next_event()
            while not isinstance(event, (NeedData, Epilogue)):
                seen.append(event)
                event = decoder.next_event()
        seen.append(event)
    except Exception as exc:  # the oracle's errors are part of what must match
        seen.append((type(exc), str(exc)))
    return seen


@settings(max_examples=400, deadline=None)
@given(boundary=boundaries, data=st.lists(pieces, max_size=20).map(b"".join),
       line_break=st.sampled_from([b"\r\n", b"\n", b"\r"]), cut=st.integers(0, 200), piece_size=st.integers(1, 64))
def test_whole_forms_decode_to_the_same_events(boundary, data, line_break, cut, piece_size):
    body, _ = multipart(data.replace(b"BOUNDARY", boundary), "a.png", model="cnn")
    body = body.replace(b"----digits-test-boundary-7d1f0c", boundary).replace(b"\r\n", line_break)
    body = body[: len(body) - cut % (len(body) + 1)]  # whole, or cut short anywhere
    assert events(FreshBoundaryDecoder, boundary, body, piece_size) == events(MultipartDecoder, boundary, body, piece_size)


def test_a_body_of_false_boundaries_is_searched_in_c_as_werkzeug_does():
    # Each "--b" without a line break after it is a step in Python for the boundary search:
    # 10 MB of them cost 2.3 s of CPU, against 0.28 s for Werkzeug's pattern (measured).
    body, _ = multipart(b"\n--bX" * 5000, "a.png")
    body = body.replace(b"----digits-test-boundary-7d1f0c", b"b")
    decoder = FreshBoundaryDecoder(b"b", 10_000, max_parts=10)
    assert events(None, b"b", body, 4096, decoder) == events(MultipartDecoder, b"b", body, 4096)
    assert decoder.boundary_re.false_markers == BoundarySearch.FALSE_MARKERS + 1  # then Werkzeug's pattern


def test_an_upload_with_a_browsers_fresh_boundary_is_read(client):
    _, strokes = STRAIGHT_DIGITS["vertical 1"]
    body, content_type = multipart(png_bytes(draw_on_canvas(strokes)), "drawing.png", model="cnn")
    fresh = "----WebKitFormBoundaryq7Rz9xK2mPLa0bCd"
    response = client.post("/api/predict/mnist", data=io.BytesIO(body.replace(b"----digits-test-boundary-7d1f0c", fresh.encode())),
                           content_type=content_type.replace("----digits-test-boundary-7d1f0c", fresh))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["prediction"] == 1


# The boundary as browsers and curl make it (up to RFC 2046's 70 characters, ending in any of
# them, space included), bodies with vertical tabs too, the pieces cut anywhere and arriving as
# bytes or bytearray, and either of the decoder's limits reached on the way.
long_boundaries = st.text(alphabet=BOUNDARY_CHARS, min_size=1, max_size=70).map(str.encode)
body_pieces = st.sampled_from([
    b"-", b"--", b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x0b", b"\x0c", b"x", b"BOUNDARY", b"BOUNDARY--", b"\r\n\r\n",
    b'Content-Disposition: form-data; name="a"', b'Content-Disposition: form-data; name="f"; filename="a.png"',
    b'\r\nBOUNDARY\r\nContent-Disposition: form-data; name="a"\r\n\r\n',
])


def decoded_in_pieces(decoder_class, boundary, body, cuts, limits, as_bytearray):
    """What the decoder makes of `body` cut at `cuts`, or the error it raised."""
    memory, parts = limits
    edges = [0, *sorted(set(cuts)), len(body)]
    pieces = [body[start:end] for start, end in zip(edges, edges[1:])]
    return decoded(decoder_class(boundary, memory, max_parts=parts), map(bytearray, pieces) if as_bytearray else pieces)


@settings(max_examples=600, deadline=None)
@given(boundary=long_boundaries, parts=st.lists(body_pieces, max_size=40), prefix=st.integers(0, 70),
       cuts=st.lists(st.integers(0, 400), max_size=6), as_bytearray=st.booleans(),
       limits=st.sampled_from([(None, None), (40, None), (1000, 1), (1000, 2), (10_000, 10)]))
@example(boundary=b"a ", parts=[b"BOUNDARY", b"\r\n", b"\r\n", b"x", b"\r\n", b"BOUNDARY--"], prefix=0, cuts=[3],
         as_bytearray=True, limits=(None, None))  # a boundary ending in a space, and a cut inside it
@example(boundary=b"-", parts=[b"\r\n-", b"BOUNDARY", b"\r\n", b"x" * 20], prefix=0, cuts=[],
         as_bytearray=False, limits=(None, None))  # "----": a false "---" overlapping the true one after it
def test_forms_cut_anywhere_decode_to_the_same_events(boundary, parts, prefix, cuts, as_bytearray, limits):
    # `prefix`: part of the boundary, so that a search can stop at a partial one.
    body = b"".join(parts).replace(b"BOUNDARY", b"--" + boundary) + b"\r\n--" + boundary[:prefix]
    ours = decoded_in_pieces(FreshBoundaryDecoder, boundary, body, cuts, limits, as_bytearray)
    assert ours == decoded_in_pieces(MultipartDecoder, boundary, body, cuts, limits, as_bytearray)
