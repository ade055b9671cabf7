"""Build realistic "phone photos" of handwritten digits from the MNIST *test* set.

No real photos can be downloaded here, so we fake them: each 28x28 MNIST test digit
is upscaled into smooth ink strokes, placed off-centre on textured paper (or a
chalkboard), lit unevenly and passed through camera-like blur, noise and JPEG.
The test set is used because the app's model never trains on it.

    python scripts/make_digit_photos.py --data /work/shared/datasets/mnist \
        --out /tmp/digit_photos --count 500 --seed 7
    python scripts/make_digit_photos.py --data /work/shared/datasets/mnist \
        --fixtures tests/fixtures/photos      # the three committed browser-test photos
"""
import argparse
import csv
import gzip
import os
import struct

import numpy as np
from PIL import Image
from scipy import ndimage

# Committed fixtures: (file, MNIST test index, light_on_dark, rng seed). Indices were
# picked by eye as clearly legible; size is pinned so the files stay small.
FIXTURES = [("digit_photo_3.jpg", 51, False, 2), ("digit_photo_7.jpg", 0, False, 0),
            ("chalk_photo_5.jpg", 53, True, 1)]


def read_idx(path):
    """Read a gzipped IDX file (0x801 labels or 0x803 images) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        magic, count = struct.unpack(">II", f.read(8))
        if magic == 0x803:
            rows, cols = struct.unpack(">II", f.read(8))
            return np.frombuffer(f.read(), np.uint8).reshape(count, rows, cols)
        if magic == 0x801:
            return np.frombuffer(f.read(), np.uint8)
        raise ValueError(f"{path}: bad IDX magic {magic:#x}")


def _smooth_noise(rng, w, h, cell):
    """Low-frequency noise in roughly [-1, 1]: random grid upsampled smoothly."""
    small = rng.normal(size=(max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return np.asarray(Image.fromarray(small, "F").resize((w, h), Image.BICUBIC)) / 2


def _perspective_coeffs(src, dst):
    """PIL PERSPECTIVE coefficients mapping output points (dst) back to input (src)."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.array(a, float), np.array(src, float).ravel())


def _ink_mask(digit28, rng, height):
    """Turn the 28x28 digit into a smooth ink-coverage mask (0..1) about `height` px tall."""
    d = digit28.astype(np.float32) / (255.0 if digit28.max() > 1 else 1.0)
    ys, xs = np.nonzero(d > 0.1)
    if ys.size == 0:
        raise ValueError("blank digit image")
    d = np.pad(d[ys.min():ys.max() + 1, xs.min():xs.max() + 1], 3)
    scale = max(1.5, height / (ys.max() - ys.min() + 1))
    big = Image.fromarray(d, "F").resize((round(d.shape[1] * scale), round(d.shape[0] * scale)),
                                         Image.BICUBIC)
    # Blur away the 28-px staircase, then divide by the local stroke maximum so faint and
    # dark MNIST strokes both peak at 1 along their centre line.
    m = ndimage.gaussian_filter(np.asarray(big), 0.5 * scale)
    peak = ndimage.gaussian_filter(ndimage.maximum_filter(m, size=int(4 * scale)), scale)
    m = m / np.maximum(peak, 0.2)
    # Pen width: MNIST strokes are marker-thick (~14% of digit height), real pens are 4-12%.
    # Signed distance to the stroke outline lets us erode/dilate uniformly; the shift is
    # capped at 40% of the typical half-width so thin parts of a digit survive.
    shape = m > 0.5
    sd = ndimage.distance_transform_edt(shape) - ndimage.distance_transform_edt(~shape)
    ridge = sd[(sd > 0) & (sd >= ndimage.maximum_filter(sd, 3))]
    r = np.median(ridge) if ridge.size else 1.0
    shift = np.clip(r - rng.uniform(0.02, 0.06) * height, -0.15 * r, 0.4 * r)
    m = np.clip((sd - shift) / rng.uniform(0.8, 2.0) + 0.5, 0, 1).astype(np.float32)
    # Rotation (+-12 deg), shear and a mild keystone, as one perspective warp.
    h, w = m.shape
    ang, sh = np.radians(rng.uniform(-12, 12)), rng.uniform(-0.15, 0.15)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]]) @ [[1, sh], [0, 1]]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    dst = (src - [w / 2, h / 2]) @ rot.T + rng.uniform(-0.05, 0.05, (4, 2)) * [w, h]
    dst -= dst.min(0)
    size = tuple(int(v) + 1 for v in dst.max(0))
    img = Image.fromarray(m, "F").transform(size, Image.PERSPECTIVE,
                                            tuple(_perspective_coeffs(src, dst)), Image.BICUBIC)
    return np.clip(np.asarray(img), 0, 1)


def make_photo(digit28, rng, light_on_dark, size=None):
    """Return an RGB PIL image that looks like a photo/scan of `digit28` written by hand.

    size: optional (width, height) to pin the canvas; otherwise 300x300 .. 1200x900.
    """
    if size is None:
        size = [(300, 300), (400, 300), (480, 640), (640, 480), (800, 600), (600, 800),
                (1024, 768), (1200, 900), (900, 1200), (512, 512)][rng.integers(10)]
    mask = _ink_mask(digit28, rng, rng.uniform(0.15, 0.7) * min(size))
    return photo_of(mask, rng, light_on_dark, size)


def photo_of(mask, rng, light_on_dark, size):
    """An ink-coverage mask (0..1) written on paper or a chalkboard of `size`, photographed."""
    W, H = size
    S = min(W, H)
    # Keep the whole digit inside the frame with a margin; shrink it if rotation grew it.
    margin = int(0.04 * S)
    fit = min(1.0, (W - 2 * margin) / mask.shape[1], (H - 2 * margin) / mask.shape[0])
    if fit < 1.0:
        mask = np.asarray(Image.fromarray(mask, "F").resize(
            (int(mask.shape[1] * fit), int(mask.shape[0] * fit)), Image.BICUBIC)).clip(0, 1)
    mh, mw = mask.shape
    y0, x0 = rng.integers(margin, H - mh - margin + 1), rng.integers(margin, W - mw - margin + 1)
    alpha = np.zeros((H, W), np.float32)
    alpha[y0:y0 + mh, x0:x0 + mw] = mask
    grain = ndimage.gaussian_filter(rng.normal(size=(H, W)).astype(np.float32), max(0.8, S / 500))
    grain /= grain.std()  # unit-variance fibre/grain texture, feature size grows with the image
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)

    if light_on_dark:
        # Chalkboard: dark green or black slate with faint smudges of old chalk.
        base = np.array([[40, 66, 52], [30, 31, 34], [34, 52, 46]][rng.integers(3)], np.float32)
        bg = base + rng.uniform(-8, 8, 3) + 6 * _smooth_noise(rng, W, H, 60)[..., None]
        ink = np.array([235, 236, 228], np.float32) + rng.uniform(-15, 10, 3)
        # Chalk breaks up on the board's grain, so its coverage is patchy.
        alpha *= rng.uniform(0.8, 0.95) * np.clip(1 - 0.25 * np.abs(grain), 0.4, 1)
    else:
        paper = np.array([[246, 244, 238], [240, 236, 222], [232, 232, 230], [250, 250, 247]]
                         [rng.integers(4)], np.float32) + rng.uniform(-6, 4, 3)
        bg = paper + (4 * _smooth_noise(rng, W, H, 40) + 1.5 * grain)[..., None]
        if rng.random() < 0.25:  # faint ruled line(s) of notebook paper, under the ink
            sp, slope = rng.uniform(0.12, 0.3) * S, rng.uniform(-0.02, 0.02)
            dist = np.abs((yy - slope * xx - rng.uniform(0, sp)) % sp - sp / 2)
            line = np.clip(1.5 - dist, 0, 1) * rng.uniform(0.25, 0.5)
            blue = np.array([150, 180, 215], np.float32)
            bg = bg * (1 - line[..., None]) + blue * line[..., None]
        kind = rng.integers(3)  # black pen, blue ballpoint, pencil
        ink = np.array([[25, 25, 30], [30, 45, 120], [85, 85, 90]][kind], np.float32)
        ink += rng.uniform(-10, 10, 3)
        alpha *= rng.uniform(0.9, 1.0) if kind < 2 else rng.uniform(0.7, 0.85) * np.clip(
            1 - 0.15 * np.abs(grain), 0.6, 1)
    img = bg * (1 - alpha[..., None]) + ink * alpha[..., None]

    # Uneven lighting: a linear gradient across the page plus a vignette.
    th = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.15) * ((xx / W - 0.5) * np.cos(th) + (yy / H - 0.5) * np.sin(th))
    r2 = ((xx / W - 0.5) ** 2 + (yy / H - 0.5) ** 2) / 0.5
    light *= 1 - rng.uniform(0, 0.2) * r2
    if not light_on_dark and rng.random() < 0.2:  # soft shadow (phone/hand) from one edge
        d = [xx, W - 1 - xx, yy, H - 1 - yy][rng.integers(4)] / S
        light *= 1 - rng.uniform(0.15, 0.35) / (1 + np.exp((d - rng.uniform(0.05, 0.2)) / 0.05))
    img *= light[..., None]

    if rng.random() < 0.35:  # slight defocus, scaled with image size
        img = ndimage.gaussian_filter(img, (rng.uniform(0.4, 1.3) * S / 500,) * 2 + (0,))
    img += rng.normal(0, rng.uniform(1.5, 5), img.shape)  # sensor noise
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def pick_indices(labels, count, rng):
    """Random test indices, as balanced over the 10 classes as `count` allows."""
    per = -(-count // 10)
    picks = np.concatenate([rng.choice(np.flatnonzero(labels == c), per, replace=False)
                            for c in range(10)])
    return rng.permutation(picks)[:count]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with the gzipped MNIST IDX files")
    p.add_argument("--out", help="output folder for the photos and labels.csv")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixtures", help="instead, write the 3 committed test fixtures here")
    a = p.parse_args(argv)
    images = read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz"))
    if a.fixtures:
        os.makedirs(a.fixtures, exist_ok=True)
        for name, idx, lod, seed in FIXTURES:
            photo = make_photo(images[idx], np.random.default_rng(seed), lod, size=(400, 300))
            photo.save(os.path.join(a.fixtures, name), quality=85)
        return
    if not a.out:
        p.error("--out is required (unless --fixtures)")
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    rows = []
    for i, idx in enumerate(pick_indices(labels, a.count, rng)):
        lod = bool(rng.random() < 0.15)
        photo = make_photo(images[idx], rng, lod)
        ext = "png" if rng.random() < 0.15 else "jpg"
        name = f"{i:04d}_{labels[idx]}.{ext}"
        photo.save(os.path.join(a.out, name), **({"quality": int(rng.integers(60, 96))}
                                                 if ext == "jpg" else {}))
        rows.append([name, int(labels[idx]), int(idx), "light-on-dark" if lod else "dark-on-light"])
    with open(os.path.join(a.out, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "mnist_test_index", "style"])
        w.writerows(rows)
    print(f"wrote {len(rows)} photos to {a.out}")


if __name__ == "__main__":
    main()
