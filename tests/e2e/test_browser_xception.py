"""Without Xception's weights, the photo page says how to get them instead of failing."""

from pathlib import Path

from playwright.sync_api import expect

PHOTO = Path(__file__).resolve().parent.parent / "fixtures" / "photos" / "digit_photo_7.jpg"


def test_without_weights_the_xception_page_explains_how_to_get_them(page, problems):
    problems.expect(503)  # the server has no weights on purpose (see live_server)
    page.goto("/xception")
    page.get_by_test_id("upload-input").set_input_files(PHOTO)
    page.get_by_test_id("upload-submit").click()

    error = page.get_by_test_id("error")
    expect(error).to_contain_text("XCEPTION_WEIGHTS")
    expect(error).to_contain_text("xception_weights_tf_dim_ordering_tf_kernels.h5")
    expect(page.get_by_test_id("xception-predictions")).to_have_count(0)
