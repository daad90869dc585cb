"""Just enough of the flatbuffer wire format to read a few fields with the standard library: the
metadata readers of `.tflite` (schema.fbs) and `.pte` (program.fbs) files, which must work where
neither runtime is installed. Positions are absolute byte offsets into `data`; a field index is its
position in the table's schema. Reading past the end raises ValueError (the callers turn it into
a one-line error naming the file)."""

from __future__ import annotations

import struct


def u32(data: bytes, pos: int) -> int:
    return struct.unpack_from("<I", data, pos)[0]


def table_at(data: bytes, pos: int) -> int:
    """The table an offset at `pos` points to (the root table: `table_at(data, 0)`)."""
    return pos + u32(data, pos)


def field(data: bytes, table: int, index: int) -> int | None:
    """Absolute position of field `index` of the table at `table`, or None when absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    size = struct.unpack_from("<H", data, vtable)[0]
    if 4 + 2 * index >= size:
        return None
    offset = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _vector_at(data: bytes, pos: int, item_size: int) -> tuple[int, int]:
    vec = table_at(data, pos)
    length = u32(data, vec)
    if vec + 4 + item_size * length > len(data):
        raise ValueError("vector past the end")
    return vec + 4, length


def vector(data: bytes, table: int, index: int, item_size: int = 1) -> tuple[int, int]:
    """(start of the first element, number of elements) of a vector field; (0, 0) when absent."""
    pos = field(data, table, index)
    return (0, 0) if pos is None else _vector_at(data, pos, item_size)


def tables(data: bytes, table: int, index: int) -> list[int]:
    """The tables of a vector-of-tables field (empty when absent)."""
    start, length = vector(data, table, index, item_size=4)
    return [table_at(data, start + 4 * i) for i in range(length)]


def string(data: bytes, table: int, index: int) -> str | None:
    """A string field, None when absent."""
    pos = field(data, table, index)
    if pos is None:
        return None
    start, length = _vector_at(data, pos, 1)
    return data[start : start + length].decode("utf-8")
