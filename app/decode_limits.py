"""What decoding an upload will cost, read from its structure before anything is decoded.

The pixel limit bounds most of what a decoder does, but not all: a file can make a
decoder work or allocate far beyond its pixel count. So each accepted format is
first walked here, in a few microseconds for ordinary files, and refused when its
layout is out of proportion:

- JPEG: libjpeg decodes every scan of a progressive (or multi-scan) file over the
  whole picture and keeps every coefficient: scans x blocks is the work. Pillow
  reads the header segments, and any stray bytes between them, one by one in Python.
- PNG: Pillow handles each chunk in Python.
- GIF: Pillow reads each extension sub-block before the first frame in Python.
- BMP: Pillow decodes run-length-encoded pixels in Python, a pixel at a time.
- TIFF: tiles and strips must fit the image; Pillow unpacks numeric tags in Python.
- WebP: nothing to walk, but libwebp's animation decoder (Pillow's only way in)
  keeps two full canvases besides the picture: its memory counts four times.

`memory_needed` then estimates the peak memory of decoding an opened image, which
callers compare with MEMORY_LIMIT before loading any pixel. Each limit below lies
far beyond what cameras, scanners and editors write; the costs in the comments were
measured on the 2-core build machine.
"""

import re
import struct
from dataclasses import dataclass

MEGABYTE = 1024 * 1024
MEMORY_LIMIT = 256 * MEGABYTE  # a 40-megapixel RGBA picture takes 160 MB
MAX_SIDE = 65_535  # JPEG's and GIF's own limit; rows this long keep decoders' row buffers small

JPEG_MAX_SEGMENTS = 2_000  # markers Pillow reads in Python (~3 us each); real files have ~20
JPEG_MAX_STRAY_BYTES = 64 * 1024  # bytes between segments, which Pillow skips one at a time
JPEG_MAX_SCANS = 500  # libjpeg-turbo's advice for untrusted files
JPEG_MAX_BLOCK_SCANS = 32_000_000  # 8x8 blocks decoded, summed over scans (~12 ns each)
PNG_MAX_CHUNKS = 20_000  # ~9 us each in Pillow; a 10 MB PNG in 8 KB chunks has 1,300
GIF_MAX_SUB_BLOCKS = 10_000  # before the first frame, ~0.3 us each in Pillow
BMP_MAX_RLE_PIXELS = 250_000  # Pillow's RLE decoder costs ~1 us a pixel ...
BMP_MAX_RLE_BYTES = 512 * 1024  # ... and ~2 us for each 2-byte code
TIFF_MAX_TAGS = 1_000  # ~20 us each in Pillow; real files have ~20-60
TIFF_MAX_TAG_VALUES = 3 * 65_536  # a 16-bit colour map or transfer function
TIFF_MAX_STRIPS = 65_536  # strips or tiles: one row each for the tallest image
TIFF_COMPRESSIONS = {1, 2, 3, 4, 5, 8, 32773, 32946}  # none, CCITT, LZW, deflate, PackBits
WEBP_COPIES = 4  # the decoder's canvas, its previous canvas, the frame handed to Pillow, the image


class OutOfProportion(ValueError):
    """A file whose decoding would cost far more than its size and pixels suggest."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Structure:
    """What a file's structure adds to the memory of decoding its picture."""

    extra_bytes: int = 0  # decoder buffers beyond the picture (JPEG coefficients, a TIFF strip)
    copies: int = 1  # how many full-size copies of the picture the decoder makes


def check_structure(data, format):
    """The Structure of `data`, which Pillow will open as `format`; raises
    OutOfProportion. Files too broken to walk are left to Pillow to refuse."""
    check = CHECKS.get(format)
    try:
        return check(data) if check else Structure()
    except (struct.error, IndexError):
        return Structure()  # cut short: Pillow stops at the same place


def memory_needed(image, structure):
    """Peak bytes to decode the opened `image` (after any draft); raises OutOfProportion
    for TIFF strips and tiles that do not fit the image, as Pillow read them."""
    width, height = image.size
    extra = structure.extra_bytes + (tiff_buffer(image) if image.format == "TIFF" else 0)
    return width * height * BYTES_PER_PIXEL.get(image.mode, 4) * structure.copies + extra


# Pillow's storage: 1 byte for these, 2 for 16-bit grey, 4 for everything else.
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


# JPEG -------------------------------------------------------------------------------

PROGRESSIVE = {0xC2, 0xCA}
DCT_FRAMES = {0xC0, 0xC1, 0xC9} | PROGRESSIVE  # the frames libjpeg decodes block by block
OTHER_FRAMES = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical",
                0xCB: "lossless", 0xCD: "hierarchical", 0xCE: "hierarchical", 0xCF: "hierarchical"}
NO_LENGTH = {0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)}  # markers Pillow reads without a payload
SCAN_START = re.compile(rb"\xff\xda")


@dataclass
class JpegFrame:
    marker: int
    width: int
    height: int
    blocks: dict  # component id -> 8x8 blocks that libjpeg allocates for it


def jpeg_frame(marker, payload):
    _, height, width, count = struct.unpack_from(">BHHB", payload)
    components = [payload[6 + 3 * i : 9 + 3 * i] for i in range(count)]
    h_max = max(c[1] >> 4 for c in components) or 1
    v_max = max(c[1] & 15 for c in components) or 1
    blocks = {}
    for ident, sampling, _ in components:
        h, v = sampling >> 4 or 1, sampling & 15 or 1
        across = -(-width * h // (8 * h_max))
        down = -(-height * v // (8 * v_max))
        blocks[ident] = -(-across // h) * h * -(-down // v) * v  # rounded up to whole MCUs
    return JpegFrame(marker, width, height, blocks)


def jpeg_header(data):
    """(frame, the components of the first scan, where its data starts), as Pillow walks
    the segments; None where Pillow would find no scan."""
    position, segments, stray, frame = 2, 0, 0, None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            after = data.find(b"\xff", position)
            after = len(data) if after < 0 else after
            stray += after - position
            if stray > JPEG_MAX_STRAY_BYTES:
                raise OutOfProportion("the JPEG has more than 64 KB of stray bytes between its segments")
            position = after
            continue
        marker = data[position + 1]
        if marker in (0x00, 0xFF):  # a stuffed byte, or padding before a marker
            position += 1 if marker == 0xFF else 2
            continue
        segments += 1
        if segments > JPEG_MAX_SEGMENTS:
            raise OutOfProportion(f"the JPEG has more than {JPEG_MAX_SEGMENTS:,} segments before its image data")
        if marker in NO_LENGTH:
            position += 2
            continue
        length = max(struct.unpack_from(">H", data, position + 2)[0], 2)  # Pillow reads nothing for 0 or 1
        payload = data[position + 4 : position + 2 + length]
        if marker in DCT_FRAMES or marker in OTHER_FRAMES:
            frame = jpeg_frame(marker, payload)
        elif marker == 0xDA:
            return frame, list(payload[1 : 1 + 2 * payload[0] : 2]), position + 2 + length
        position += 2 + length
    return None


def jpeg_structure(data):
    header = jpeg_header(data)
    if header is None or header[0] is None:
        return Structure()
    frame, first_scan, position = header
    if frame.marker in OTHER_FRAMES:
        raise OutOfProportion(f"{OTHER_FRAMES[frame.marker]} JPEG files are not accepted; upload an ordinary "
                              "JPEG, or a PNG", status=415)
    if frame.marker not in PROGRESSIVE and len(first_scan) == len(frame.blocks):
        return Structure()  # one scan: libjpeg streams it, a row of blocks at a time
    scans, work = jpeg_scans(data, frame, first_scan, position)
    if scans > JPEG_MAX_SCANS or work > JPEG_MAX_BLOCK_SCANS:
        allowed = min(JPEG_MAX_SCANS, JPEG_MAX_BLOCK_SCANS * scans // work)
        counted = f"more than {JPEG_MAX_SCANS:,}" if scans > JPEG_MAX_SCANS else f"{scans:,}"
        raise OutOfProportion(
            f"too many scans: the JPEG has {counted} scans, and one of {frame.width}x{frame.height} pixels may "
            f"have at most {allowed:,}; save it as an ordinary JPEG or a PNG")
    return Structure(extra_bytes=128 * sum(frame.blocks.values()))  # 64 two-byte coefficients a block


def jpeg_scans(data, frame, first_scan, position):
    """(scans, blocks decoded over all scans) of a multi-scan JPEG. Every scan that
    libjpeg reads starts with the bytes FF DA, so counting them all, to the end of the
    file, can only overcount (a marker's payload, a second picture in an MPO file)."""
    scans, work = 1, sum(frame.blocks.get(c, 0) for c in first_scan)
    for found in SCAN_START.finditer(data, position):  # (3x faster than bytes.find)
        scans += 1
        if scans > JPEG_MAX_SCANS:
            break
        at = found.start()
        count = data[at + 4] if at + 4 < len(data) else 0
        work += sum(frame.blocks.get(c, 0) for c in data[at + 5 : at + 5 + 2 * count : 2])
    return scans, work


# PNG, GIF, BMP ----------------------------------------------------------------------


def png_structure(data):
    position, chunks = 8, 0
    while position + 8 <= len(data):
        chunks += 1
        if chunks > PNG_MAX_CHUNKS:
            raise OutOfProportion(f"the PNG is cut into more than {PNG_MAX_CHUNKS:,} chunks")
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IEND":
            break
        position += 12 + length
    return Structure()


GIF_BLOCK = re.compile(rb"[!,;]")  # an extension, an image, the end; Pillow skips anything else


def gif_structure(data):
    flags = data[10]
    position = 13 + (3 << (flags & 7) + 1 if flags & 0x80 else 0)
    sub_blocks = stray = 0
    while position < len(data):
        found = GIF_BLOCK.search(data, position)
        if not found:
            break
        stray += found.start() - position
        if found.group() != b"!" or stray > GIF_MAX_SUB_BLOCKS:
            break  # the first frame, or the end: what Pillow reads before decoding stops here
        position = found.start() + 2
        while position < len(data) and data[position]:
            sub_blocks += 1
            if sub_blocks > GIF_MAX_SUB_BLOCKS:
                raise OutOfProportion(f"the GIF has more than {GIF_MAX_SUB_BLOCKS:,} extension blocks "
                                      "before its first image")
            position += data[position] + 1
        position += 1
    if stray > GIF_MAX_SUB_BLOCKS:
        raise OutOfProportion("the GIF has too many stray bytes before its first image")
    return Structure()


def bmp_structure(data):
    offset, header_size = struct.unpack_from("<I4xI", data, 10)
    if header_size < 40:
        return Structure()  # the old 12-byte header has no compression
    width, height, _, _, compression = struct.unpack_from("<iiHHI", data, 18)
    if compression in (1, 2):  # RLE8, RLE4
        pixels, coded = abs(width) * abs(height), len(data) - offset
        if pixels > BMP_MAX_RLE_PIXELS or coded > BMP_MAX_RLE_BYTES:
            raise OutOfProportion(
                f"a run-length-encoded BMP may have at most {BMP_MAX_RLE_PIXELS:,} pixels and "
                f"{BMP_MAX_RLE_BYTES // 1024} KB of data; save it as PNG or as an uncompressed BMP")
    return Structure()


def webp_structure(data):
    return Structure(copies=WEBP_COPIES)


# TIFF -------------------------------------------------------------------------------

TIFF_NUMBERS = {3, 4, 5, 8, 9, 10, 11, 12, 13, 16, 17, 18}  # types that Pillow unpacks value by value
OFFSETS_AND_COUNTS = {273, 279, 324, 325}  # StripOffsets, StripByteCounts, TileOffsets, TileByteCounts
# The tags that say how the pixels are laid out: size, samples, compression, strips, tiles.
LAYOUT_TAGS = {256, 257, 258, 259, 262, 277, 278, 284, 322, 323, 338} | OFFSETS_AND_COUNTS


def tiff_structure(data):
    """Before Pillow reads the first directory: every tag it would unpack must be of a
    sensible length, and no layout tag may appear twice (Pillow and libtiff might each
    keep a different one). The layout itself is checked on Pillow's reading of it
    (`tiff_buffer`)."""
    endian = ">" if data[:2] == b"MM" else "<"
    big = data[2] == 43
    offset = struct.unpack_from(endian + ("8xQ" if big else "4xI"), data)[0]
    count = struct.unpack_from(endian + ("Q" if big else "H"), data, offset)[0]
    if count > TIFF_MAX_TAGS:
        raise OutOfProportion(f"the TIFF has {count:,} tags; the limit is {TIFF_MAX_TAGS:,}")
    size, start = (20, offset + 8) if big else (12, offset + 2)
    seen = set()
    for index in range(min(count, (len(data) - start) // size)):  # Pillow reads as many as there are
        tag, kind, values = struct.unpack_from(endian + ("HHQ" if big else "HHI"), data, start + index * size)
        if tag in seen and tag in LAYOUT_TAGS:
            raise OutOfProportion(f"the TIFF gives its tag {tag} twice")
        seen.add(tag)
        limit = TIFF_MAX_STRIPS if tag in OFFSETS_AND_COUNTS else TIFF_MAX_TAG_VALUES
        if kind in TIFF_NUMBERS and values > limit:
            what = "strips or tiles" if tag in OFFSETS_AND_COUNTS else "values"
            raise OutOfProportion(f"the TIFF lists {values:,} {what} in its tag {tag}; the limit is {limit:,}")
    return Structure()


def tiff_buffer(image):
    """The bytes of libtiff's buffer for one strip or tile of the opened TIFF `image`;
    raises OutOfProportion when its strips or tiles do not fit the image."""
    tags = image.tag_v2
    compression = tags.get(259, 1)
    if compression not in TIFF_COMPRESSIONS:
        raise OutOfProportion(f"TIFF files with compression {compression} are not accepted; upload one with no, "
                              "LZW or deflate compression, or a PNG", status=415)
    width, height = tags.get(256, 1) or 1, tags.get(257, 1) or 1  # (Pillow refuses an image without them)
    samples = tags.get(277, 1)
    planes = samples if tags.get(284, 1) == 2 else 1
    if 322 in tags:
        across, down = tags.get(322, 0), tags.get(323, 0)
        if not (0 < across <= max(width, 1024) + 15 and 0 < down <= max(height, 1024) + 15):
            raise OutOfProportion(f"the TIFF's tiles ({across}x{down}) are far larger than its image "
                                  f"({width}x{height})")
        kind, listed = "tiles", len(tags.get(324, ()))
    else:
        across, down = width, min(tags.get(278, height) or height, height)
        kind, listed = "strips", len(tags.get(273, ()))
    pieces = -(-width // across) * -(-height // down) * planes
    if listed > pieces or pieces > TIFF_MAX_STRIPS:
        raise OutOfProportion(f"the TIFF lists {listed:,} {kind} for a {width}x{height} image made of {pieces:,}")
    if compression == 1:
        return 0  # Pillow reads uncompressed strips itself, a row at a time
    bits = sum(tags.get(258, (1,))[:samples]) if tags.get(284, 1) == 1 else max(tags.get(258, (1,)))
    row = -(-across * bits // 8)
    return down * max(row, 4 * across if tags.get(262) == 6 else 0)  # YCbCr comes out as RGBA


CHECKS = {"JPEG": jpeg_structure, "PNG": png_structure, "GIF": gif_structure, "BMP": bmp_structure,
          "WEBP": webp_structure, "TIFF": tiff_structure}
