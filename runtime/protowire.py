"""Just enough of the protobuf wire format to find one string entry in a serialised message, with
the standard library alone: format plug-ins whose containers are protobuf messages read their "dbd"
metadata with it, so reading a file's contract never needs the format's own (heavy) library.

Malformed input raises ValueError (or UnicodeDecodeError for a key or value that is not UTF-8);
`dbd.runtime.metadata.read_metadata` reports either as a truncated or invalid file.
"""

from __future__ import annotations

from typing import Iterator


def varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the base-128 varint at `pos`."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field_number, wire_type, value) of one message; length-delimited values as memoryview."""
    data = memoryview(data)
    pos, end = 0, len(data)
    while pos < end:
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = varint(data, pos)
            if pos + size > end:
                raise ValueError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated message")
        yield number, wire, value


def string_map_entry(entry: memoryview) -> tuple[str, str]:
    """A map<string, string> entry (or a StringStringEntryProto): key = field 1, value = field 2."""
    key = value = ""
    for number, wire, field in fields(entry):
        if wire == 2 and number == 1:
            key = bytes(field).decode("utf-8")
        elif wire == 2 and number == 2:
            value = bytes(field).decode("utf-8")
    return key, value


def submessages(data: bytes | memoryview, number: int) -> Iterator[memoryview]:
    """Every length-delimited field `number` of a message (nested messages, map entries)."""
    for found, wire, value in fields(data):
        if found == number and wire == 2:
            yield value
