"""Rewriting the two CRIU images that tie a dump to the sandbox it came from: its user and UTS namespaces.

A snapshot is restored into a *new* sandbox: another slot, so another host uid range (`userns.sandbox_range`),
and another id, so another hostname. CRIU restores a user namespace with the uid/gid map it dumped
(`userns-<id>.img`) and a UTS namespace with the dumped hostname (`utsns-<id>.img`), so each restore gets its
own copies of those two images with the new range and name; every other image is shared, read-only, by all
restores of the snapshot.

CRIU's image files are a magic header and then entries, each a little-endian u32 length and a protobuf
message. The two messages are tiny (CRIU's `images/userns.proto` and `images/utsns.proto`):

    message uid_gid_extent { required uint32 first = 1; required uint32 lower_first = 2; required uint32 count = 3; }
    message userns_entry   { repeated uid_gid_extent uid_map = 1; repeated uid_gid_extent gid_map = 2; }
    message utsns_entry    { required string nodename = 1; required string domainname = 2; }

so this module carries the few lines of protobuf wire format they need rather than CRIU's `crit` (not in the
node toolchain) or a protobuf dependency.
"""

from __future__ import annotations

import struct
from pathlib import Path

IMG_COMMON_MAGIC = 0x54564319
IMG_SERVICE_MAGIC = 0x55105940
VARINT, LENGTH_DELIMITED = 0, 2

Field = tuple[int, int, int | bytes]  # (number, wire type, value)


class ImageFormatError(ValueError):
    """An image is not what CRIU 4 writes (truncated, or a wire type these messages never use)."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise ImageFormatError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def decode(message: bytes) -> list[Field]:
    fields: list[Field] = []
    at = 0
    while at < len(message):
        key, at = _varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, at = _varint(message, at)
            fields.append((number, wire, value))
        elif wire == LENGTH_DELIMITED:
            size, at = _varint(message, at)
            if at + size > len(message):
                raise ImageFormatError("truncated field")
            fields.append((number, wire, message[at:at + size]))
            at += size
        else:
            raise ImageFormatError(f"unexpected wire type {wire}")
    return fields


def encode(fields: list[Field]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += _encode_varint(number << 3 | wire)
        if isinstance(value, bytes):
            out += _encode_varint(len(value)) + value
        else:
            out += _encode_varint(value)
    return bytes(out)


def read_image(path: Path) -> tuple[bytes, list[bytes]]:
    """(header, entries) of a CRIU image file."""
    data = path.read_bytes()
    if len(data) < 4:
        raise ImageFormatError(f"{path.name} is too short")
    header_len = 8 if struct.unpack_from("<I", data)[0] in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC) else 4
    header, at, entries = data[:header_len], header_len, []
    while at < len(data):
        if at + 4 > len(data):
            raise ImageFormatError(f"{path.name}: truncated entry size")
        (size,) = struct.unpack_from("<I", data, at)
        at += 4
        if at + size > len(data):
            raise ImageFormatError(f"{path.name}: truncated entry")
        entries.append(data[at:at + size])
        at += size
    return header, entries


def write_image(path: Path, header: bytes, entries: list[bytes]) -> None:
    """Write a new file at `path` (unlinking what was there: it may be a hard link to a shared image)."""
    path.unlink(missing_ok=True)
    path.write_bytes(header + b"".join(struct.pack("<I", len(e)) + e for e in entries))


def shift_userns(entry: bytes, old_root: int, new_root: int) -> bytes:
    """A userns entry whose extents point `lower_first` (the host ids) at the new range instead of the old."""
    fields: list[Field] = []
    for number, wire, value in decode(entry):
        if number in (1, 2) and isinstance(value, bytes):
            extent = [(n, w, v - old_root + new_root if n == 2 and isinstance(v, int) else v)
                      for n, w, v in decode(value)]
            value = encode(extent)
        fields.append((number, wire, value))
    return encode(fields)


def rename_utsns(entry: bytes, hostname: str) -> bytes:
    return encode([(n, w, hostname.encode() if n == 1 else v) for n, w, v in decode(entry)])


def userns_maps(entry: bytes) -> list[tuple[int, int, int]]:
    """The (first, lower_first, count) extents of a userns entry's uid map (for tests and checks)."""
    out = []
    for number, _, value in decode(entry):
        if number == 1 and isinstance(value, bytes):
            ext = {n: v for n, _, v in decode(value)}
            out.append((int(ext.get(1, 0)), int(ext.get(2, 0)), int(ext.get(3, 0))))
    return out


def retarget(images: Path, old_root: int, new_root: int, hostname: str) -> None:
    """Point the dump in `images` at a new uid range and hostname (rewrites `userns-*.img` and `utsns-*.img`)."""
    found = False
    for path in images.glob("userns-*.img"):
        header, entries = read_image(path)
        write_image(path, header, [shift_userns(e, old_root, new_root) for e in entries])
        found = True
    if not found:
        raise ImageFormatError("the dump holds no user namespace image")
    for path in images.glob("utsns-*.img"):
        header, entries = read_image(path)
        write_image(path, header, [rename_utsns(e, hostname) for e in entries])
