"""A job's upload -> one file per image in the job's own folder. No Flask here.

The images come as files of a multipart form and/or inside one or more ZIPs. Nothing
of the user's is used as a path: each image is written as <folder>/<position>, and
the name it came with is kept only as text, for the results. Checks (OWASP's file
upload and zip-bomb advice): declared sizes and compression ratios before anything is
unpacked (zipfile itself stops a member at its declared size), no '..', absolute
names or symbolic links, no ZIP inside a ZIP, at most JOB_MAX_FILES images.
Non-images are not checked here: each fails its own row, with the single-image API's
message, when a worker reads it.
"""

import stat
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a ZIP's first member, or an empty ZIP
RATIO_CHECKED_FROM = 1024 * 1024  # smaller members can't be bombs, whatever they compress to
MEGABYTE = 1024 * 1024


class JobInputRejected(ValueError):
    """An upload that can't become a job; `status` is the HTTP status to answer."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_unpacked_bytes: int  # all members of all ZIPs together
    max_ratio: int  # uncompressed size / compressed size of one member


def is_zip(stream, filename):
    head = stream.read(4)
    stream.seek(0)
    return head.startswith(ZIP_SIGNATURES) or (filename or "").lower().endswith(".zip")


def unpack(sent_files, folder, limits):
    """Write every image of `sent_files` ([(filename, seekable binary file)]) to
    `folder`, numbered from 0; returns their names. Raises JobInputRejected, and then
    leaves `folder` for the caller to delete."""
    folder.mkdir(parents=True)
    names, unpacked = [], 0
    for filename, stream in sent_files:
        if is_zip(stream, filename):
            for name, member in zip_members(filename, stream, limits, unpacked):
                unpacked += len(member)
                keep(folder, names, f"{filename}/{name}" if len(sent_files) > 1 else name, member, limits)
            continue
        data = stream.read()
        if data or filename:  # else a file input left empty
            keep(folder, names, filename or "(no name)", data, limits)
    if not names:
        raise JobInputRejected("the job has no images: send image files, or a ZIP of them, in the field 'files'")
    return names


def keep(folder, names, name, data, limits):
    if len(names) >= limits.max_files:
        raise too_many_files(limits)
    (folder / str(len(names))).write_bytes(data)
    names.append(name)


def zip_members(filename, stream, limits, unpacked_before):
    """(name, bytes) of each file in the ZIP, after checking the whole directory first."""
    shown = filename or "the ZIP"
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile as exc:
        raise JobInputRejected(f"{shown} is not a readable ZIP ({exc})") from None
    with archive:
        members = [info for info in archive.infolist() if wanted(info)]
        if len(members) > limits.max_files:  # said before thousands of files are written, not after
            raise too_many_files(limits)
        for info in members:
            check_member(shown, info, limits)
        check_whole_ratio(shown, members, limits)
        total = unpacked_before + sum(info.file_size for info in members)
        if total > limits.max_unpacked_bytes:
            raise JobInputRejected(
                f"{shown} unpacks to {total / MEGABYTE:,.0f} MB: the limit is "
                f"{limits.max_unpacked_bytes / MEGABYTE:,.0f} MB unpacked a job (a zip bomb?)", 413)
        for info in members:
            member = read_member(archive, info, shown)
            if member.startswith(ZIP_SIGNATURES):
                raise nested(shown, info.filename)
            yield info.filename, member


def wanted(info):
    """Folders hold nothing to read, and __MACOSX/ holds the Finder's metadata, not images."""
    return not info.is_dir() and not info.filename.startswith("__MACOSX/")


def check_member(shown, info, limits):
    name = info.filename
    windows = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or windows.is_absolute() or windows.drive or name.startswith("\\"):
        raise JobInputRejected(f"{shown} holds an absolute path ({name[:100]!r}): only relative names are accepted")
    if ".." in windows.parts:  # Windows' parts split on both / and \
        raise JobInputRejected(f"{shown} holds a name with '..' ({name[:100]!r}): "
                               "names may not point outside the archive")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise JobInputRejected(f"{shown} holds a symbolic link ({name[:100]!r}): only plain files are accepted")
    if name.lower().endswith(".zip"):
        raise nested(shown, name)
    if info.file_size >= RATIO_CHECKED_FROM and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise JobInputRejected(
            f"{shown}: {name[:100]!r} is compressed over {limits.max_ratio}:1 "
            f"({info.file_size / MEGABYTE:,.0f} MB from {info.compress_size:,} bytes): refused as a zip bomb", 413)


def check_whole_ratio(shown, members, limits):
    """Many members, each too small for its own ratio to be checked, can still be a bomb
    together: a thousand blank 1 MB files are 1 GB on disk from a 1 MB upload."""
    size, packed = sum(info.file_size for info in members), sum(info.compress_size for info in members)
    if size >= RATIO_CHECKED_FROM and size > limits.max_ratio * max(packed, 1):
        raise JobInputRejected(
            f"{shown}'s files are compressed over {limits.max_ratio}:1 together "
            f"({size / MEGABYTE:,.0f} MB from {packed:,} bytes): refused as a zip bomb", 413)


def too_many_files(limits):
    return JobInputRejected(f"the job has more than {limits.max_files:,} files: the limit is "
                            f"{limits.max_files:,} a job", 413)


def nested(shown, name):
    return JobInputRejected(f"{shown} holds another ZIP ({name[:100]!r}): put all the images in one ZIP, "
                            "without archives inside it")


def read_member(archive, info, shown):
    try:
        with archive.open(info) as member:
            return member.read()  # stops at the declared size: zipfile checks the CRC there
    # NotImplementedError: a compression method Python lacks
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise JobInputRejected(f"{shown}: {info.filename[:100]!r} cannot be unpacked ({exc})") from None
    except RuntimeError as exc:  # encrypted
        raise JobInputRejected(f"{shown}: {info.filename[:100]!r} cannot be unpacked ({exc}): "
                               "send a ZIP without a password") from None
