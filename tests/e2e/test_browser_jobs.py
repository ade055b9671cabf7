"""A job from the browser: choose a ZIP on /jobs, watch the progress bar reach the end,
download the CSV. The server's own Celery worker runs it (live_server: the embedded default)."""

import csv
import io

import pytest
from playwright.sync_api import expect

from app.samples import labelled_digits, zip_bytes


def submit_and_wait(page, tmp_path, files):
    """Submit {name: bytes} as a ZIP on /jobs and wait for the job's page to say done."""
    archive = tmp_path / "scans.zip"
    archive.write_bytes(zip_bytes(files))
    page.goto("/jobs")
    page.get_by_test_id("jobs-input").set_input_files(archive)
    page.get_by_test_id("jobs-submit").click()
    # The worker may still be loading its models when the session starts: allow for it.
    expect(page.get_by_test_id("job-status")).to_have_text("done", timeout=90_000)



def test_a_zip_submitted_on_the_jobs_page_ends_in_a_csv(page, problems, tmp_path):
    labels, files = labelled_digits(12)
    submit_and_wait(page, tmp_path, files)
    progress = page.get_by_test_id("job-progress")
    expect(progress).to_have_attribute("value", str(len(files)))
    expect(progress).to_have_attribute("max", str(len(files)))
    expect(page.locator("#job-results tbody tr")).to_have_count(len(files))

    with page.expect_download() as download_info:
        page.get_by_test_id("job-download").click()
    rows = list(csv.DictReader(io.StringIO(download_info.value.path().read_text())))
    assert sorted(row["file"] for row in rows) == sorted(files)
    assert {row["file"]: row["prediction"] for row in rows} == {name: str(digit) for name, digit in labels.items()}
    assert problems.all() == []


@pytest.mark.parametrize("context_options", [{"viewport": {"width": 390, "height": 844}}], ids=["phone"])
def test_the_answers_table_headings_fit_their_columns_on_a_phone(page, problems, tmp_path):
    """At 390 px the fixed-width 'Confidence' heading ran into 'Error' ("ConfidencError"):
    the page itself did not overflow, so the page-width check missed it."""
    submit_and_wait(page, tmp_path, labelled_digits(2)[1])
    overflowing = page.evaluate("""[...document.querySelectorAll('#job-results th, #job-results td')]
        .filter(cell => cell.scrollWidth > cell.clientWidth).map(cell => cell.textContent)""")
    assert overflowing == []
    assert problems.all() == []
