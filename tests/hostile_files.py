"""Hostile image files, built in memory: small on disk, costly to decode.

Each function returns the bytes of one file. They are decoder bombs that stay within
the pixel limit (so a pixel count alone does not catch them) and their relatives in
every accepted format. Files of zeros are compressed without ever holding the zeros:
deflate blocks that end in a full flush stand alone and can be repeated.
"""

import functools
import io
import struct
import zlib

from PIL import Image

MEGABYTE = 1024 * 1024
CAP_SIDE = 6324  # 6324 x 6324 = 39,992,976 pixels: just under the 40-megapixel limit


def encode(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


# Deflate ----------------------------------------------------------------------------


@functools.cache
def zeros_deflate(length, wrapped=True):
    """A zlib stream (or raw deflate) that inflates to `length` zero bytes."""
    block_size = 16 * MEGABYTE
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(block_size)) + compressor.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(length, block_size)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = compressor.compress(bytes(rest)) + compressor.flush()
    raw = block * whole + tail
    if not wrapped:
        return raw
    adler = (length % 65521) << 16 | 1  # the Adler-32 of `length` zeros
    return b"\x78\xda" + raw + struct.pack(">I", adler)


# PNG --------------------------------------------------------------------------------

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width, height, color_type=0, bit_depth=8, chunks_before=b"", idat_size=None):
    """A PNG of zeros (black, or palette entry 0); `chunks_before` go before IDAT,
    and IDAT is cut into chunks of `idat_size` bytes when given."""
    row = 1 + (width * CHANNELS[color_type] * bit_depth + 7) // 8  # a filter byte, then the row
    pixels = zeros_deflate(row * height)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    palette = png_chunk(b"PLTE", b"\xff\xff\xff\x00\x00\x00") if color_type == 3 else b""
    size = idat_size or len(pixels)
    idat = b"".join(png_chunk(b"IDAT", pixels[i : i + size]) for i in range(0, len(pixels), size))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + palette + chunks_before
            + idat + png_chunk(b"IEND", b""))


def png_palette_at_the_cap():
    """Finding 4: a palette PNG of 40 megapixels in about 40 KB."""
    return png(CAP_SIDE, CAP_SIDE, color_type=3)


def png_rgba16_at_the_cap():
    """The costliest PNG pixels there are (16-bit RGBA), 40 megapixels of them."""
    return png(CAP_SIDE, CAP_SIDE, color_type=6, bit_depth=16)


def png_rgba8_at_the_cap():
    """160 MB of RGBA once decoded."""
    return png(CAP_SIDE, CAP_SIDE, color_type=6)


def png_grey16_at_the_cap():
    return png(CAP_SIDE, CAP_SIDE, color_type=0, bit_depth=16)


def png_one_long_row():
    """40 megapixels in one row: the decoder's row buffers are as big as the image."""
    return png(40_000_000, 1, color_type=6, bit_depth=16)


def png_many_chunks(size=10 * MEGABYTE - 4096):
    """A small image behind 870,000 empty ancillary chunks, each read by Python."""
    empty = png_chunk(b"hoSt", b"")
    return png(28, 28, chunks_before=empty * (size // len(empty)))


def png_many_idat_chunks():
    """40 megapixels whose 39 KB of pixel data come one byte per chunk."""
    return png(CAP_SIDE, CAP_SIDE, idat_size=1)


def png_text_chunks(count=80):
    """Many compressed text chunks, each inflating to just under Pillow's 1 MB limit."""
    text = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(MEGABYTE - 1024), 9))
    return png(28, 28, chunks_before=text * count)


def png_icc_bomb():
    """An ICC profile that inflates to 64 MB."""
    icc = png_chunk(b"iCCP", b"icc\x00\x00" + zeros_deflate(64 * MEGABYTE))
    return png(28, 28, chunks_before=icc)


# JPEG -------------------------------------------------------------------------------


class BitWriter:
    """Entropy-coded JPEG data: bits, most significant first, 0xFF bytes stuffed."""

    def __init__(self):
        self.out = bytearray()
        self.bits = self.count = 0

    def write(self, value, length):
        for shift in range(length - 1, -1, -1):
            self.bits = self.bits << 1 | (value >> shift) & 1
            self.count += 1
            if self.count == 8:
                self.out.append(self.bits)
                if self.bits == 0xFF:
                    self.out.append(0)
                self.bits = self.count = 0

    def data(self):
        if self.count:
            self.write((1 << (8 - self.count)) - 1, 8 - self.count)  # pad with ones
        return bytes(self.out)


def jpeg_segment(marker, payload):
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


# One DC table: every difference is 0 (a 1-bit code). One AC table: the 15 end-of-band
# run symbols EOB0..EOB14 (4-bit codes), enough to skip any number of empty blocks.
JPEG_TABLES = (
    jpeg_segment(0xDB, b"\x00" + bytes([1]) * 64)
    + jpeg_segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
    + jpeg_segment(0xC4, b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15)))
)


def empty_ac_scan(component, blocks):
    """A progressive AC scan (coefficients 1-63) of `component` in which all `blocks` are empty."""
    writer = BitWriter()
    while blocks:
        run = min(blocks, 32767)
        r = run.bit_length() - 1
        writer.write(r, 4)  # the code of symbol EOBr is r itself
        writer.write(run - (1 << r), r)
        blocks -= run
    header = jpeg_segment(0xDA, bytes([1, component, 0x00, 1, 63, 0]))
    return header + writer.data()


def dc_scan(components, mcus):
    """A progressive DC scan of `components` (interleaved, one block each per MCU), all zero."""
    writer = BitWriter()
    for _ in range(mcus * len(components) // 8):
        writer.write(0, 8)
    writer.write(0, mcus * len(components) % 8)
    header = jpeg_segment(0xDA, bytes([len(components)]) + b"".join(bytes([c, 0x00]) for c in components)
                          + bytes([0, 0, 0]))
    return header + writer.data()


@functools.cache
def progressive_jpeg(width, height, scans, components=1):
    """Finding 1: a progressive JPEG (every component sampled 1x1) with one DC scan,
    then the same empty AC scan `scans` times over, spread over the components."""
    ids = list(range(1, components + 1))
    frame = struct.pack(">BHHB", 8, height, width, components) + b"".join(bytes([c, 0x11, 0]) for c in ids)
    blocks = -(-width // 8) * -(-height // 8)
    ac = [empty_ac_scan(c, blocks) for c in ids]
    body = b"".join(ac[i % components] for i in range(scans))
    return (b"\xff\xd8" + JPEG_TABLES + jpeg_segment(0xC2, frame) + dc_scan(ids, blocks) + body
            + b"\xff\xd9")


def jpeg_progressive_scans(scans):
    """A grey 6320x6320 progressive JPEG of `scans` + 1 scans."""
    return progressive_jpeg(CAP_SIDE // 8 * 8, CAP_SIDE // 8 * 8, scans)


def jpeg_progressive_7000_scans():
    """Finding 1: 624 KB, 15 s of decoding."""
    return jpeg_progressive_scans(7000)


def jpeg_progressive_at_the_limit():
    """51 scans of 6320x6320: the most a picture this size may have (decode_limits.JPEG_MAX_BLOCK_SCANS)."""
    return jpeg_progressive_scans(50)


def jpeg_progressive_60_scans():
    """60 scans of 6320x6320, over the limit; cameras and editors write about 10."""
    return jpeg_progressive_scans(59)


def jpeg_sequential_scans(scans=20_000):
    """A baseline JPEG (three components) whose scans each hold one component and no data:
    libjpeg decodes every block of each (as zeros), and a scan takes 12 bytes."""
    side = CAP_SIDE // 8 * 8
    frame = struct.pack(">BHHB", 8, side, side, 3) + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3))
    body = b"".join(jpeg_segment(0xDA, bytes([1, i % 3 + 1, 0x00, 0, 63, 0])) for i in range(scans))
    return b"\xff\xd8" + JPEG_TABLES + jpeg_segment(0xC0, frame) + body + b"\xff\xd9"


def jpeg_segments_between_scans(size=10 * MEGABYTE - 200_000):
    """A 40-megapixel progressive JPEG with 2.5 million empty comments between its two scans."""
    data = jpeg_progressive_scans(1)
    last_scan = data.rindex(b"\xff\xda")
    return data[:last_scan] + jpeg_segment(0xFE, b"") * (size // 4) + data[last_scan:]


def jpeg_progressive_filling_the_upload():
    """As many empty scans as fit in a 10 MB upload: about 200,000."""
    one = len(jpeg_progressive_scans(2)) - len(jpeg_progressive_scans(1))
    return jpeg_progressive_scans((10 * MEGABYTE - 100_000) // one)


def jpeg_cmyk_progressive_at_the_cap():
    """A 40-megapixel CMYK progressive JPEG: libjpeg holds every coefficient, 320 MB."""
    return progressive_jpeg(CAP_SIDE // 8 * 8, CAP_SIDE // 8 * 8, scans=4, components=4)


def jpeg_with_markers_before_the_image(size=10 * MEGABYTE - 4096):
    """A small JPEG with 2.6 million empty comment segments in front of its frame."""
    real = encode(Image.new("L", (28, 28), 255), "JPEG")
    return real[:2] + jpeg_segment(0xFE, b"") * (size // 4) + real[2:]


def jpeg_with_junk_before_the_image(size=10 * MEGABYTE - 4096):
    """A small JPEG with 10 MB of stray bytes between two segments (skipped one by one)."""
    real = encode(Image.new("L", (28, 28), 255), "JPEG")
    return real[:2] + jpeg_segment(0xFE, b"") + b"\x00" * size + real[2:]


# TIFF -------------------------------------------------------------------------------

TIFF_TYPES = {1: "B", 3: "H", 4: "I"}  # BYTE, SHORT, LONG


def tiff(tags, blobs=b""):
    """A little-endian TIFF with one IFD of `tags` {tag: (type, values or (count, offset))}.

    `blobs` are appended after the header; an entry given as ("at", count, offset) points
    into them (offset relative to the start of the blobs)."""
    start = 8
    ifd_offset = start + len(blobs)
    extra = bytearray()
    entries = []
    extra_start = ifd_offset + 2 + 12 * len(tags) + 4
    for tag in sorted(tags):
        kind, values = tags[tag]
        if values and values[0] == "at":
            _, count, offset = values
            entries.append(struct.pack("<HHII", tag, kind, count, start + offset))
            continue
        packed = struct.pack(f"<{len(values)}{TIFF_TYPES[kind]}", *values)
        if len(packed) <= 4:
            entries.append(struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\0"))
        else:
            entries.append(struct.pack("<HHII", tag, kind, len(values), extra_start + len(extra)))
            extra += packed + b"\0" * (len(packed) % 2)
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + blobs + ifd + bytes(extra)


def grey_tiff_tags(width, height, compression=1):
    return {256: (4, [width]), 257: (4, [height]), 258: (3, [8]), 259: (3, [compression]),
            262: (3, [1]), 277: (3, [1])}


def tiff_huge_tile(side=16, tile=46336):
    """Finding 2: a 16x16 image made of one 46336x46336 deflate tile of zeros (2 GB)."""
    data = zeros_deflate(tile * tile)
    tags = grey_tiff_tags(side, side, compression=8)
    tags.update({322: (4, [tile]), 323: (4, [tile]), 324: (4, [8]), 325: (4, [len(data)])})
    return tiff(tags, data)


def tiff_many_strips(side=8, strips=5_000_000):
    """Finding 3: an 8x8 image that lists 5 million strips (offsets and byte counts share one array)."""
    values = struct.pack("<H", 8) * strips  # every strip: 8 bytes at offset 8
    tags = grey_tiff_tags(side, side)
    tags.update({273: (3, ("at", strips, 0)), 278: (4, [1]), 279: (3, ("at", strips, 0))})
    return tiff(tags, values)


def white_tiff_tags(side=8):
    """An uncompressed white square whose pixels are the first side * side bytes after the header."""
    tags = grey_tiff_tags(side, side)
    tags.update({273: (4, [8]), 278: (4, [side]), 279: (4, [side * side])})
    return tags


def tiff_many_tags(count=15_000):
    """An IFD of 15,000 entries, each parsed by Python."""
    tags = white_tiff_tags()
    tags.update({tag: (3, [1]) for tag in range(50000, 50000 + count)})
    return tiff(tags, b"\xff" * 64)


def tiff_huge_colormap(count=4_000_000):
    """A palette image whose colour map has 4 million entries (Pillow converts each in Python)."""
    tags = white_tiff_tags()
    tags.update({262: (3, [3]), 320: (3, ("at", count, 64))})
    return tiff(tags, bytes(64) + bytes(2 * count))


def tiff_one_big_strip():
    """40 megapixels of 16-bit RGBA in one deflate strip: libtiff's strip buffer is 320 MB."""
    width = height = CAP_SIDE
    data = zeros_deflate(width * height * 8)
    tags = {256: (4, [width]), 257: (4, [height]), 258: (3, [16, 16, 16, 16]), 259: (3, [8]),
            262: (3, [2]), 277: (3, [4]), 338: (3, [2]), 273: (4, [8]), 278: (4, [height]),
            279: (4, [len(data)])}
    return tiff(tags, data)


def tiff_rgba_at_the_cap():
    """40 megapixels of 8-bit RGBA in deflate strips of 256 rows: the costliest ordinary TIFF."""
    rows = 256
    strip = zeros_deflate(CAP_SIDE * rows * 4)
    count = -(-CAP_SIDE // rows)
    last = zeros_deflate(CAP_SIDE * (CAP_SIDE - rows * (count - 1)) * 4)
    blobs = strip * (count - 1) + last
    offsets = [8 + len(strip) * i for i in range(count)]
    tags = {256: (4, [CAP_SIDE]), 257: (4, [CAP_SIDE]), 258: (3, [8, 8, 8, 8]), 259: (3, [8]), 262: (3, [2]),
            277: (3, [4]), 338: (3, [2]), 273: (4, offsets), 278: (4, [rows]),
            279: (4, [len(strip)] * (count - 1) + [len(last)])}
    return tiff(tags, blobs)


def tiff_tiled(width, height, tile, compression=1):
    """An ordinary tiled grey TIFF of white (uncompressed, or deflate with compression=8)."""
    piece = b"\xff" * tile * tile
    piece = zlib.compress(piece) if compression == 8 else piece
    count = -(-width // tile) * -(-height // tile)
    tags = grey_tiff_tags(width, height, compression)
    tags.update({322: (4, [tile]), 323: (4, [tile]), 324: (4, [8 + len(piece) * i for i in range(count)]),
                 325: (4, [len(piece)] * count)})
    return tiff(tags, piece * count)


def tiff_jpeg_compressed():
    return encode(Image.new("RGB", (64, 64), "white"), "TIFF", compression="jpeg")


def tiff_many_pages(pages=80_000):
    """80,000 pages of 8x8 white, all sharing one strip: only the first is ever read."""
    page = tiff(white_tiff_tags(), b"\xff" * 64)  # every value fits in its entry: the IFD ends the file
    ifd = page[8 + 64 : -4]
    out = bytearray(page[: 8 + 64])
    for index in range(pages):
        following = 0 if index == pages - 1 else len(out) + len(ifd) + 4
        out += ifd + struct.pack("<I", following)
    return bytes(out)


# GIF --------------------------------------------------------------------------------


def gif_header(width, height):
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\xff\xff\xff\x00\x00\x00"


@functools.cache
def gif_image(width, height):
    """A frame at (0, 0) whose pixels are all colour 0, LZW-coded as Pillow writes it:
    from its image descriptor to the end of the file."""
    image = Image.new("P", (width, height), 0)
    image.putpalette([255, 255, 255, 0, 0, 0])
    gif = encode(image, "GIF")
    at = 13 + 3 * 2 ** ((gif[10] & 7) + 1)  # after the header and the global colour table
    while gif[at] == 0x21:  # extensions: a label, then sub-blocks up to an empty one
        at += 2
        while gif[at]:
            at += gif[at] + 1
        at += 1
    return gif[at:]


def gif_many_sub_blocks(count=5_000_000):
    """An 8x8 GIF behind an application extension of 5 million one-byte sub-blocks."""
    extension = b"!\xff\x0bHOSTILE1.00" + b"\x01\x00" * count + b"\x00"
    return gif_header(8, 8) + extension + gif_image(8, 8)


def gif_long_comment(count=5_000_000):
    """A comment of 5 million one-byte pieces, which Pillow collects one by one."""
    return gif_header(8, 8) + b"!\xfe" + b"\x01\x00" * count + b"\x00" + gif_image(8, 8)


def gif_at_the_cap():
    """A 40-megapixel palette frame, 200 KB on disk."""
    return gif_header(CAP_SIDE, CAP_SIDE) + gif_image(CAP_SIDE, CAP_SIDE)


def gif_frame_beyond_its_screen():
    """An 8x8 logical screen whose first frame is 7000x7000."""
    return gif_header(8, 8) + gif_image(7000, 7000)


# BMP --------------------------------------------------------------------------------


def bmp(width, height, bits, compression, pixels, colors=256):
    palette = b"".join(bytes((v, v, v, 0)) for v in (i * 255 // (colors - 1) for i in range(colors)))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, len(pixels), 2835, 2835,
                       colors, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


def bmp_rle8_line_ends(side=6000):
    """RLE8: one pixel, then end-of-line, on every row. Pillow pads each row in Python, a byte at a time."""
    return bmp(side, side, 8, 1, b"\x01\x00\x00\x00" * side + b"\x00\x01")


def bmp_rle4_runs(side=6000):
    """RLE4: runs of 255 pixels, which Pillow writes out in Python, a pixel at a time."""
    runs = b"\xff\x11" * (side // 255) + bytes((side % 255, 0x11)) + b"\x00\x00"
    return bmp(side, side, 4, 2, runs * side + b"\x00\x01", colors=16)


def bmp_1bit_at_the_cap():
    """40 megapixels of 1-bit white, 5 MB."""
    row = -(-CAP_SIDE // 32) * 4
    return bmp(CAP_SIDE, CAP_SIDE, 1, 0, b"\xff" * row * CAP_SIDE, colors=2)


# EXIF -------------------------------------------------------------------------------


def exif_with_many_tags(count=65535):
    """EXIF data whose first directory has 65,535 entries (Pillow parses each in Python)."""
    entries = b"".join(struct.pack("<HHI4s", 1000 + i % 60000, 3, 1, b"\x01\0\0\0") for i in range(count))
    return b"II*\x00" + struct.pack("<IH", 8, count) + entries + bytes(4)


def png_exif_many_tags():
    return png(28, 28, chunks_before=png_chunk(b"eXIf", exif_with_many_tags()))


def webp_exif_many_tags():
    return encode(Image.new("RGB", (28, 28), "white"), "WEBP", exif=b"Exif\0\0" + exif_with_many_tags())


# WebP -------------------------------------------------------------------------------


def riff_chunk(fourcc, payload):
    return fourcc + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)


def webp_animated_huge_canvas(side=CAP_SIDE):
    """Finding 4: a 90-byte animation on a 6324x6324 canvas, its one frame 1x1."""
    tiny = encode(Image.new("RGBA", (1, 1)), "WEBP", lossless=True)
    frame = tiny[12:]  # the VP8L chunk
    dims = (side - 1).to_bytes(3, "little") * 2
    vp8x = riff_chunk(b"VP8X", bytes([0x12, 0, 0, 0]) + dims)  # alpha, animation
    anim = riff_chunk(b"ANIM", b"\xff\xff\xff\xff\x00\x00")
    anmf = riff_chunk(b"ANMF", bytes(6) + bytes(6) + (100).to_bytes(3, "little") + b"\x00" + frame)
    body = b"WEBP" + vp8x + anim + anmf
    return b"RIFF" + struct.pack("<I", len(body)) + body


@functools.cache
def webp_lossless_at_the_cap():
    """A still, lossless 40-megapixel WebP of one colour: a few hundred bytes."""
    return encode(Image.new("L", (CAP_SIDE, CAP_SIDE), 255), "WEBP", lossless=True, method=0)


@functools.cache
def webp_lossless_at_the_limit():
    """A still, lossless 4000x4000 WebP: the largest that decode_limits lets through (256 MB)."""
    return encode(Image.new("L", (4000, 4000), 255), "WEBP", lossless=True, method=0)


def webp_many_frames(count=150_000):
    """An 8x8 animation of 150,000 frames: only the first is decoded."""
    one = webp_animated_huge_canvas(8)
    header_end = 12 + 18 + 14  # RIFF header, VP8X, ANIM
    body = one[8:] + one[header_end:] * (count - 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body
