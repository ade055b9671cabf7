"""Small helpers shared by the test modules."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from app.quota import LEDGER

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


def multipart(data, filename="digit.png", **fields):
    """`data` as the multipart field `file`, encoded by hand: (body bytes, Content-Type).

    For real HTTP clients, and for bodies over ~500 KB with the test client, which
    otherwise spools them to a temporary file that it never closes (a ResourceWarning).
    """
    boundary = "----digits-test-boundary-7d1f0c"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def folder_files(folder):
    """The names of the files in an upload folder, sorted, all but the quota's ledger
    (and SQLite's files beside it)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(LEDGER)) if folder.exists() else []
