"""Build "phone photos" of handwritten numbers: rows of 2-6 digits.

Two kinds, written with the same pens, paper, chalkboards, lighting and camera as
make_digit_photos.py's single digits:
- "mnist": MNIST *test* digits (never training digits), each at its own size,
  baseline and slant, with uneven gaps between them; the row slightly rotated.
- "font": numbers typed in handwriting fonts from Debian packages, where glyphs
  may touch (Dancing Script joins them):
      apt-get install fonts-dkg-handwriting fonts-breip fonts-dancingscript \
          fonts-humor-sans fonts-comic-neue fonts-bwht
  (not fonts-femkeklaver: its digits are outlines, which no pen writes)

    python scripts/make_number_photos.py --data /work/shared/datasets/mnist \
        --out /tmp/numbers --count 1000 --seed 1
    python scripts/measure_numbers.py /tmp/numbers
"""
import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_digit_photos import _ink_mask, photo_of, read_idx  # noqa: E402

# Handwriting fonts from Debian packages (package: files under /usr/share/fonts).
FONTS = {
    "fonts-dkg-handwriting": ["truetype/fifthhorseman/dkg.ttf", "truetype/fifthhorseman/dkgBd.ttf"],
    "fonts-breip": ["truetype/breip/Breip.ttf"],
    "fonts-dancingscript": ["opentype/dancingscript/DancingScript-Regular.otf",
                            "opentype/dancingscript/DancingScript-Bold.otf"],
    "fonts-humor-sans": ["truetype/humor-sans/Humor-Sans.ttf"],
    "fonts-comic-neue": ["opentype/comic-neue/ComicNeue-Regular.otf", "opentype/comic-neue/ComicNeue-Italic.otf"],
    "fonts-bwht": ["opentype/bwht/BecauseWeBuild-Regular.otf", "opentype/bwht/BecauseWeLearn-Regular.otf",
                   "opentype/bwht/BecauseWeMentor-Regular.otf"],
}
FONT_FOLDER = Path("/usr/share/fonts")
SIZES = [(640, 320), (800, 400), (900, 300), (1000, 500), (1200, 400), (1200, 600), (1600, 600), (1024, 768)]


def installed_fonts():
    """Paths of the handwriting fonts that are installed; the missing packages named."""
    paths = [FONT_FOLDER / path for files in FONTS.values() for path in files]
    missing = sorted({package for package, files in FONTS.items() if not all((FONT_FOLDER / f).is_file() for f in files)})
    return [path for path in paths if path.is_file()], missing


def rotated(mask, degrees):
    image = Image.fromarray(mask, "F").rotate(degrees, Image.BICUBIC, expand=True)
    return np.clip(np.asarray(image), 0, 1)


def mnist_row(digits28, rng, height):
    """The digits side by side as one ink mask: each its own size, baseline and slant
    (make_digit_photos' pen and warp), uneven gaps, the row slightly rotated."""
    masks = [_ink_mask(d, rng, height * rng.uniform(0.8, 1.05)) for d in digits28]
    gaps = [int(rng.uniform(0.1, 0.45) * height) for _ in masks[1:]] + [0]
    drops = [int(rng.uniform(-0.08, 0.08) * height) for _ in masks]
    top = -min(drops)
    row_height = max(m.shape[0] + drop for m, drop in zip(masks, drops)) + top
    row = np.zeros((row_height, sum(m.shape[1] for m in masks) + sum(gaps)), np.float32)
    x = 0
    for mask, gap, drop in zip(masks, gaps, drops):
        y = top + drop
        region = row[y:y + mask.shape[0], x:x + mask.shape[1]]
        np.maximum(region, mask, out=region)
        x += mask.shape[1] + gap
    return rotated(row, rng.uniform(-4, 4))


def font_row(number, font_path, rng, height):
    """The number typed in a handwriting font as an ink mask, slightly rotated. The
    glyphs are set a little tighter than the font sets them (90-100% of each advance),
    as people write digits close together, so that some touch."""
    font = ImageFont.truetype(str(font_path), size=int(height * 1.3))
    tracking = rng.uniform(0.9, 1.0)
    advances = [font.getlength(digit) * tracking for digit in number]
    width = int(sum(advances) + font.size)
    image = Image.new("L", (width + 20, font.size * 2), 0)
    draw = ImageDraw.Draw(image)
    x = 10.0
    for digit, advance in zip(number, advances):
        draw.text((x, font.size // 3), digit, font=font, fill=255)
        x += advance
    mask = np.asarray(image, np.float32) / 255
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    mask = np.pad(mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], 10)
    return rotated(mask, rng.uniform(-4, 4))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder with the gzipped MNIST IDX files")
    parser.add_argument("--out", required=True, help="output folder for the photos and labels.csv")
    parser.add_argument("--count", type=int, default=1000, help="numbers of each kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images = read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz"))
    fonts, missing = installed_fonts()
    if missing:
        parser.error(f"handwriting fonts missing: apt-get install {' '.join(missing)}")
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    rows = []
    for kind in ("mnist", "font"):
        for i in range(args.count):
            length = int(rng.integers(2, 7))
            size = SIZES[rng.integers(len(SIZES))]
            light_on_dark = bool(rng.random() < 0.15)
            height = rng.uniform(0.25, 0.55) * min(size)
            if kind == "mnist":
                picks = rng.choice(len(labels), length, replace=False)
                number = "".join(str(labels[index]) for index in picks)
                mask, source = mnist_row(images[picks], rng, height), " ".join(map(str, picks))
            else:
                number = "".join(str(d) for d in rng.integers(0, 10, length))
                font = fonts[rng.integers(len(fonts))]
                mask, source = font_row(number, font, rng, height), font.name
            photo = photo_of(mask, rng, light_on_dark, size)
            extension = "png" if rng.random() < 0.15 else "jpg"
            name = f"{kind}_{i:04d}_{number}.{extension}"
            photo.save(os.path.join(args.out, name),
                       **({"quality": int(rng.integers(60, 96))} if extension == "jpg" else {}))
            rows.append([name, number, kind, "light-on-dark" if light_on_dark else "dark-on-light", source])
    with open(os.path.join(args.out, "labels.csv"), "w", newline="") as labels_file:
        writer = csv.writer(labels_file)
        writer.writerow(["file", "number", "kind", "style", "source"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} photos to {args.out}")


if __name__ == "__main__":
    main()
