"""Score the digit models on a folder of photos, through the JSON API.

    python scripts/make_digit_photos.py --data ../shared/datasets/mnist --out /tmp/digit_photos
    python scripts/measure_photos.py /tmp/digit_photos

Every photo is posted to POST /api/predict/mnist exactly as curl would send it
(the Flask test client runs the same request path in-process, uploads go to a
temporary folder). Prints the accuracy of each model, per style, and the misses.
"""

import csv
import io
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app import create_app  # noqa: E402
from app.models import DIGIT_MODELS  # noqa: E402


def main(folder):
    folder = Path(folder)
    rows = list(csv.DictReader(open(folder / "labels.csv")))
    with tempfile.TemporaryDirectory() as uploads:
        client = create_app({"UPLOAD_FOLDER": uploads, "UPLOAD_PRUNE_EVERY": 1000}).test_client()
        for model in DIGIT_MODELS:
            hits, totals, misses = defaultdict(int), defaultdict(int), []
            for row in rows:
                data = (folder / row["file"]).read_bytes()
                response = client.post(f"/api/predict/mnist?model={model}",
                                       data={"file": (io.BytesIO(data), row["file"])})
                predicted = response.json.get("prediction") if response.status_code == 200 else response.json["error"]
                for key in ("all", row["style"]):
                    totals[key] += 1
                    hits[key] += predicted == int(row["label"])
                if predicted != int(row["label"]):
                    misses.append(f"{row['file']}→{predicted}")
            summary = ", ".join(f"{k} {hits[k] / totals[k]:.1%} ({hits[k]}/{totals[k]})" for k in totals)
            print(f"{model}: {summary}")
            print(f"  misses: {' '.join(misses)}")


if __name__ == "__main__":
    main(sys.argv[1])
