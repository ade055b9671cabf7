"""Small helpers shared by the test modules."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from app.quota import LEDGER
from app.samples import multipart  # noqa: F401 (the tests import it from here too)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def encode(image, format="PNG", **options):
    """A PIL image or uint8 array -> file bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def post_file(client, url, data, filename="digit.png", **fields):
    """POST `data` as the multipart field `file`."""
    return client.post(url, data={"file": (io.BytesIO(data), filename), **fields},
                       content_type="multipart/form-data")


def folder_files(folder):
    """The names of the files in an upload folder, sorted, all but the quota's ledger
    (and SQLite's files beside it)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(LEDGER)) if folder.exists() else []
