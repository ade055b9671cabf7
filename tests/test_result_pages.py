"""Results with an address: an accepted upload redirects to its result page, which shows
the answer kept beside the stored upload (the same answer on every reload), until the
upload is deleted to make room; then a friendly 404. And what the page says: sure,
not sure, several digits."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.pages import duration
from app.quota import UploadFolder
from app.recognition import UNSURE_BELOW, is_uncertain
from app.samples import STRAIGHT_DIGITS, draw_on_canvas, photograph, png_bytes
from helpers import FIXTURES, encode, multipart, post_file

PHOTO = (FIXTURES / "photos" / "digit_photo_7.jpg").read_bytes()


def headline(page):
    return re.sub(r"<[^>]+>", "", re.search(r"<h1[^>]*>(.*?)</h1>", page, re.S).group(1)).strip()


def test_an_upload_redirects_to_its_result_page_and_a_reload_shows_the_same_answer(client, uploads):
    response = post_file(client, "/predict", PHOTO, "seven.jpg")
    assert response.status_code == 303
    address = response.headers["Location"]
    name = address.removeprefix("/digits/")
    assert uploads() == sorted([name, name + ".json"])
    first, again = client.get(address), client.get(address)
    assert first.status_code == again.status_code == 200
    assert first.data == again.data
    assert headline(first.data.decode()) == "It looks like a 7"


def test_the_result_page_shows_what_the_post_computed_not_a_second_reading(client, app, uploads):
    """The stored copy may be re-encoded; the page shows the answer kept when it was posted."""
    address = post_file(client, "/predict", PHOTO, "seven.jpg").headers["Location"]
    answer_path = Path(app.config["UPLOAD_FOLDER"]) / (address.removeprefix("/digits/") + ".json")
    answer = json.loads(answer_path.read_text())
    assert answer["kind"] == "digits" and set(answer["results"]) == {"dense", "cnn"}
    answer["results"]["cnn"] = [0.0] * 3 + [0.99] + [0.001] * 6  # as if it had said 3
    answer["results"]["dense"] = answer["results"]["cnn"]
    answer_path.write_text(json.dumps(answer))
    assert headline(client.get(address).data.decode()) == "It looks like a 3"


def test_an_upload_deleted_to_make_room_gets_a_friendly_404(client, app):
    app.config["UPLOAD_MAX_FILES"] = 1
    first = post_file(client, "/predict", PHOTO, "a.jpg").headers["Location"]
    post_file(client, "/predict", PHOTO, "b.jpg")
    response = client.get(first)
    assert response.status_code == 404 and response.mimetype == "text/html"
    page = response.data.decode()
    assert "no longer kept" in page and "upload the picture again" in page
    assert "<title>This result is no longer kept" in page  # the title says what went wrong


@pytest.mark.parametrize("address", [
    "/digits/0123456789abcdef0123456789abcdef.png",  # never stored
    "/digits/not-a-name",
    "/digits/..%2f.ledger.sqlite3",
])
def test_unknown_result_addresses_are_404(client, address):
    assert client.get(address).status_code == 404


@pytest.mark.parametrize("damaged", [
    b"",  # the rename reached the disk and the data did not: a power cut (no fsync)
    b'{"kind":"digits","results":{"cnn":[0.1',  # cut short
    b"\xff\xfe not text",
    b"[]",
    b'{"kind":"digits"}',  # an answer of another shape (an older version of the app)
])
def test_a_damaged_answer_file_is_a_friendly_404_not_a_500(client, app, damaged):
    address = post_file(client, "/predict", PHOTO, "a.jpg").headers["Location"]
    (Path(app.config["UPLOAD_FOLDER"]) / (address.removeprefix("/digits/") + ".json")).write_bytes(damaged)
    response = client.get(address)
    assert response.status_code == 404 and "no longer kept" in response.data.decode()


def test_a_digit_upload_has_no_xception_page_and_the_other_way_round(client):
    address = post_file(client, "/predict", PHOTO, "a.jpg").headers["Location"]
    assert client.get(address.replace("/digits/", "/xception/")).status_code == 404


def test_opening_the_form_address_leads_to_the_forms(client):
    response = client.get("/predict")
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_the_answer_counts_against_the_caps_and_goes_with_its_upload(tmp_path):
    folder = UploadFolder(tmp_path)
    name = folder.store(b"x" * 100, "png", max_files=5, max_bytes=1000, answer=b"y" * 50)
    assert folder.usage() == (1, 150) and folder.answer(name) == b"y" * 50
    folder.store(b"z" * 900, "png", max_files=5, max_bytes=1000)  # 150 + 900 > 1000: the first goes
    assert folder.answer(name) is None and not (tmp_path / (name + ".json")).exists()


def test_a_restart_counts_answers_and_drops_those_without_an_upload(tmp_path):
    folder = UploadFolder(tmp_path)
    name = folder.store(b"x" * 100, "png", max_files=5, max_bytes=1000, answer=b"y" * 50)
    (tmp_path / ("f" * 32 + ".png.json")).write_bytes(b"{}")  # its upload deleted by hand
    (tmp_path / ".ledger.sqlite3").unlink()
    assert UploadFolder(tmp_path).usage() == (1, 150)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".ledger")) == [name, name + ".json"]


def test_the_result_page_shows_a_preview_of_at_most_640_pixels(client, handwritten_photo):
    body, content_type = multipart(handwritten_photo, "big.png")  # over 500 KB: see app.samples.multipart
    address = client.post("/predict", data=body, content_type=content_type).headers["Location"]
    page = client.get(address).data.decode()
    preview = re.search(r'src="(/uploads/[^"]+/preview)"', page).group(1)
    with client.get(preview) as response:
        assert response.status_code == 200 and "sandbox" in response.headers["Content-Security-Policy"]
        image = Image.open(io.BytesIO(response.data))
    assert max(image.size) <= 640


@pytest.fixture
def handwritten_photo():
    """A 7 photographed at 2000x1500, kept as a PNG (stored copies are at most 1024 px)."""
    return png_bytes(photograph(draw_on_canvas(STRAIGHT_DIGITS["7"][1]), (2000, 1500), seed=4))


# What the result says ---------------------------------------------------------------

SURE_SEVEN = [0.001] * 7 + [0.99] + [0.001] * 2
LOW_SEVEN = [0.0] * 7 + [0.6] + [0.0, 0.4]
SURE_NINE = [0.001] * 9 + [0.99]


@pytest.mark.parametrize(("answers", "uncertain"), [
    ({"cnn": SURE_SEVEN, "dense": SURE_SEVEN}, False),
    ({"cnn": LOW_SEVEN, "dense": SURE_SEVEN}, True),  # the headline model is under the threshold
    ({"cnn": SURE_SEVEN, "dense": SURE_NINE}, True),  # the models disagree
    ({"cnn": SURE_SEVEN}, False),
    ({"dense": LOW_SEVEN}, True),
])
def test_the_uncertainty_rule(answers, uncertain):
    assert is_uncertain(answers, "cnn" if "cnn" in answers else "dense") is uncertain


def test_the_threshold_is_the_one_the_models_page_shows(client):
    assert f"under {UNSURE_BELOW * 100:.0f}%" in client.get("/models").data.decode()


def store_answer(client, app, results, side_by_side=1):
    """A result page for a made-up answer, kept as the page itself keeps one."""
    folder = UploadFolder(app.config["UPLOAD_FOLDER"])
    answer = {"kind": "digits", "results": results, "errors": {}, "side_by_side": side_by_side,
              "model_input": "data:image/png;base64,"}
    name = folder.store(encode(np.zeros((28, 28), np.uint8)), "png", 10, 10**6, json.dumps(answer).encode())
    return client.get(f"/digits/{name}").data.decode()


def test_when_the_models_disagree_the_page_says_not_sure_with_both_answers(client, app):
    page = store_answer(client, app, {"dense": SURE_NINE, "cnn": SURE_SEVEN})
    assert headline(page) == "Not sure: 7 or 9?"
    assert ("The convolutional network says 7 (99.0% sure); the dense network (the lesson&#39;s) says 9 (99.0% sure)."
            in page)


def test_when_the_headline_model_is_unsure_the_page_gives_its_two_likeliest(client, app):
    page = store_answer(client, app, {"dense": LOW_SEVEN, "cnn": LOW_SEVEN})
    assert headline(page) == "Not sure: 7 or 9?"
    assert "Neither is sure enough (under 80%)" in page


def test_an_eight_is_an_8(client, app):
    eight = [0.001] * 8 + [0.99, 0.001]
    assert headline(store_answer(client, app, {"dense": eight, "cnn": eight})) == "It looks like an 8"


def test_several_digits_side_by_side_are_pointed_to_the_number_reader(client, mnist_sample):
    images, _ = mnist_sample
    pair = Image.fromarray(np.concatenate([255 - images[0], 255 - images[1]], axis=1)).resize((560, 280))
    page_image = Image.new("L", (640, 480), 255)
    page_image.paste(pair, (40, 100))
    body, content_type = multipart(png_bytes(photograph(page_image.convert("RGB"), seed=1)), "pair.png")
    address = client.post("/predict", data=body, content_type=content_type).headers["Location"]
    page = client.get(address).data.decode()
    assert 'data-testid="several-digits"' in page and "2 digits side by side" in page and "number reader" in page


def test_one_digit_is_not_taken_for_several(client):
    address = post_file(client, "/predict", PHOTO, "seven.jpg").headers["Location"]
    assert 'data-testid="several-digits"' not in client.get(address).data.decode()


def test_the_api_says_whether_it_is_sure(client):
    sure = post_file(client, "/api/predict/mnist?model=cnn", PHOTO, "seven.jpg").json
    assert sure["uncertain"] is (sure["confidence"] < UNSURE_BELOW)
    assert set(sure) == {"model", "prediction", "confidence", "probabilities", "upload", "uncertain"}


@pytest.mark.parametrize(("seconds", "said"), [(12.4, "12 s"), (340, "6 min"), (1020, "17 min"), (3900, "1 h 5 min")])
def test_durations_read_as_people_say_them(seconds, said):
    assert duration(seconds) == said


def test_the_models_page_shows_readable_plots_and_the_errors_plot(client, app):
    page = client.get("/models").data.decode()
    assert '<a href="/models/cnn/curves.png"' in page  # select to enlarge
    assert "The test digits this model gets wrong" in page and 'src="/models/cnn/errors.png"' in page
    assert re.search(r'data-testid="duration-cnn">\d+ (min|s|h)', page)
