"""Score the digit models on photographed numbers, through the JSON API.

    python scripts/make_number_photos.py --data ../shared/datasets/mnist --out /tmp/numbers --seed 2
    python scripts/measure_numbers.py /tmp/numbers [--models cnn dense] [--misses]

Every photo is posted to POST /api/predict/number as curl would send it (the Flask
test client runs the same request path in-process; uploads go to a temporary
folder). Prints, per model and kind of number (MNIST digits, handwriting fonts):
whole-number exact matches, digit accuracy, how often the digit count is wrong, and
the accuracy for each digit 0-9.
"""

import argparse
import csv
import io
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app import create_app  # noqa: E402
from app.models import DIGIT_MODELS  # noqa: E402


def score(client, folder, rows, model):
    """Per kind: Counter of exact, count_wrong, numbers, digits, digits_right, and per-class hits."""
    results, misses = {}, []
    for row in rows:
        data = (folder / row["file"]).read_bytes()
        response = client.post(f"/api/predict/number?model={model}", data={"file": (io.BytesIO(data), row["file"])})
        answer = response.json.get("number", "") if response.status_code == 200 else ""
        truth = row["number"]
        tally = results.setdefault(row["kind"], Counter())
        tally["numbers"] += 1
        tally["exact"] += answer == truth
        tally["count_wrong"] += len(answer) != len(truth)
        for position, digit in enumerate(truth):
            # Digits are scored where the count is right; a wrong count misses all its digits.
            right = len(answer) == len(truth) and answer[position] == digit
            tally["digits"] += 1
            tally["digits_right"] += right
            tally[f"total {digit}"] += 1
            tally[f"right {digit}"] += right
        if answer != truth:
            misses.append(f"{row['file']}→{answer or response.json.get('error')}")
    return results, misses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--models", nargs="+", default=list(DIGIT_MODELS), choices=DIGIT_MODELS)
    parser.add_argument("--misses", action="store_true", help="list the numbers read wrong")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    rows = list(csv.DictReader(open(folder / "labels.csv")))
    with tempfile.TemporaryDirectory() as uploads:
        client = create_app({"UPLOAD_FOLDER": uploads, "UPLOAD_PRUNE_EVERY": 1000}).test_client()
        print("| model | numbers | n | exact match | digit accuracy | digit count wrong | per digit 0-9 |")
        print("|---|---|---|---|---|---|---|")
        for model in args.models:
            results, misses = score(client, folder, rows, model)
            for kind, tally in results.items():
                per_digit = " ".join(f"{tally[f'right {d}'] / tally[f'total {d}']:.1%}"
                                     for d in "0123456789" if tally[f"total {d}"])
                print(f"| {model} | {kind} | {tally['numbers']} | {tally['exact'] / tally['numbers']:.2%} "
                      f"| {tally['digits_right'] / tally['digits']:.2%} "
                      f"| {tally['count_wrong'] / tally['numbers']:.2%} | {per_digit} |")
            if args.misses:
                print(f"  {model} misses: {' '.join(misses)}")


if __name__ == "__main__":
    main()
