"""Parquet footers: a Thrift Compact Protocol codec and the relocation of row groups.

A Parquet file is ``PAR1``, the column chunks, the footer (a Thrift-encoded FileMetaData), the
footer's length (4 bytes, little-endian) and ``PAR1`` again. Row groups encoded as separate
files can be joined into one by concatenating their column chunks and writing one footer that
lists all their row groups, each with its file offsets shifted to where its bytes landed.

The codec is generic and keeps everything it reads: a struct is a list of ``(field_id, type,
value)`` in wire order, a list or set a :class:`Collection`, a map a :class:`Map`; an
:class:`Encoded` value is written as the bytes it holds. Encoding follows Apache Thrift's C++
``TCompactProtocol``, so that a footer pyarrow wrote re-encodes to the same bytes. Field ids and
their meaning are those of ``parquet.thrift``.
"""
from __future__ import annotations

import struct as _struct
from dataclasses import dataclass
from typing import Any, Callable

MAGIC = b"PAR1"

# Compact Protocol type codes. A struct field's bool is carried in its header as TRUE or FALSE;
# decoded, its type is BOOL and its value a Python bool.
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
BOOL = TRUE

Struct = list  # of (field_id, type, value)


@dataclass
class Collection:
    """A Thrift list or set: the element type code and the elements."""

    elem_type: int
    items: list


@dataclass(frozen=True)
class Encoded:
    """A value already in its Compact Protocol encoding (from :func:`encode`), written as is."""

    data: bytes


@dataclass
class Map:
    """A Thrift map: key and value type codes and the ``(key, value)`` pairs in wire order."""

    key_type: int
    value_type: int
    items: list


class _Reader:
    def __init__(self, data: bytes | memoryview):
        self.data = memoryview(data).cast("B")
        self.pos = 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated Thrift data")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in (TRUE, FALSE):  # an element of a collection: one byte
            return self.byte() == TRUE
        if kind == BYTE:
            return _struct.unpack("b", self.take(1))[0]
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            return _struct.unpack("<d", self.take(8))[0]
        if kind == BINARY:
            return self.take(self.varint())
        if kind in (LIST, SET):
            return self.collection()
        if kind == MAP:
            return self.map()
        if kind == STRUCT:
            return self.struct()
        raise ValueError(f"unknown Thrift compact type {kind}")

    def collection(self) -> Collection:
        header = self.byte()
        size = header >> 4
        if size == 15:
            size = self.varint()
        elem = header & 0x0F
        return Collection(elem, [self.value(elem) for _ in range(size)])

    def map(self) -> Map:
        size = self.varint()
        if size == 0:
            return Map(0, 0, [])
        types = self.byte()
        key, val = types >> 4, types & 0x0F
        return Map(key, val, [(self.value(key), self.value(val)) for _ in range(size)])

    def struct(self) -> Struct:
        fields: Struct = []
        last = 0
        while True:
            header = self.byte()
            if header == STOP:
                return fields
            kind, delta = header & 0x0F, header >> 4
            field_id = last + delta if delta else self.zigzag()
            if kind in (TRUE, FALSE):
                fields.append((field_id, BOOL, kind == TRUE))
            else:
                fields.append((field_id, kind, self.value(kind)))
            last = field_id


class _Writer:
    def __init__(self):
        self.out = bytearray()
        self._parts: list[bytes | _Slot] = []

    def parts(self) -> list[bytes | _Slot]:
        """What was written, split around the :class:`_Slot` values left open."""
        return [*self._parts, bytes(self.out)]

    def varint(self, n: int) -> None:
        while n > 0x7F:
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7
        self.out.append(n)

    def zigzag(self, n: int, bits: int) -> None:
        if not -(1 << (bits - 1)) <= n < 1 << (bits - 1):
            raise OverflowError(f"{n} does not fit a Thrift i{bits}")
        self.varint((n << 1) ^ (n >> (bits - 1)))

    def value(self, kind: int, value: Any) -> None:
        if isinstance(value, Encoded):
            self.out += value.data
        elif isinstance(value, _Slot):
            self._parts += [bytes(self.out), value]
            self.out.clear()
        elif kind in (TRUE, FALSE):
            self.out.append(TRUE if value else FALSE)
        elif kind == BYTE:
            self.out += _struct.pack("b", value)
        elif kind == I16:
            self.zigzag(value, 16)
        elif kind == I32:
            self.zigzag(value, 32)
        elif kind == I64:
            self.zigzag(value, 64)
        elif kind == DOUBLE:
            self.out += _struct.pack("<d", value)
        elif kind == BINARY:
            self.varint(len(value))
            self.out += value
        elif kind in (LIST, SET):
            self.collection(value)
        elif kind == MAP:
            self.map(value)
        elif kind == STRUCT:
            self.struct(value)
        else:
            raise ValueError(f"unknown Thrift compact type {kind}")

    def collection(self, value: Collection) -> None:
        size = len(value.items)
        if size < 15:
            self.out.append(size << 4 | value.elem_type)
        else:
            self.out.append(0xF0 | value.elem_type)
            self.varint(size)
        for item in value.items:
            self.value(value.elem_type, item)

    def map(self, value: Map) -> None:
        if not value.items:
            self.out.append(0)
            return
        self.varint(len(value.items))
        self.out.append(value.key_type << 4 | value.value_type)
        for key, val in value.items:
            self.value(value.key_type, key)
            self.value(value.value_type, val)

    def struct(self, fields: Struct) -> None:
        last = 0
        for field_id, kind, value in fields:
            wire = (TRUE if value else FALSE) if kind == BOOL else kind
            if 0 < field_id - last <= 15:
                self.out.append((field_id - last) << 4 | wire)
            else:
                self.out.append(wire)
                self.zigzag(field_id, 16)
            if kind != BOOL:
                self.value(kind, value)
            last = field_id
        self.out.append(STOP)


def decode(data: bytes | memoryview) -> Struct:
    """The Thrift compact-encoded struct at the start of ``data``, as ``(field_id, type, value)``."""
    try:
        return _Reader(data).struct()
    except IndexError:
        raise ValueError("truncated Thrift data") from None


def encode(fields: Struct) -> bytes:
    """The Thrift compact encoding of a struct given as ``(field_id, type, value)`` triples."""
    writer = _Writer()
    writer.struct(fields)
    return bytes(writer.out)


# Field ids in parquet.thrift.
_META_NUM_ROWS, _META_ROW_GROUPS = 3, 4
_GROUP_COLUMNS, _GROUP_NUM_ROWS, _GROUP_FILE_OFFSET, _GROUP_ORDINAL = 1, 3, 5, 7
_CHUNK_META_DATA = 3
_CHUNK_OFFSETS = (2, 4, 6)  # file_offset, offset_index_offset, column_index_offset
_COLUMN_OFFSETS = (9, 10, 11, 14)  # data_page, index_page, dictionary_page, bloom_filter


def read_footer(data: bytes | memoryview) -> tuple[int, Struct]:
    """Where the footer of the complete Parquet file ``data`` starts, and its FileMetaData."""
    view = memoryview(data).cast("B")
    if len(view) < 12 or view[:4] != MAGIC or view[-4:] != MAGIC:
        raise ValueError("not a Parquet file")
    start = len(view) - 8 - int.from_bytes(view[-8:-4], "little")
    if start < 4:
        raise ValueError("the Parquet footer length is out of range")
    return start, decode(view[start:-4])


_ORDINAL = -1


@dataclass(frozen=True)
class _Slot:
    """An i16/i64 field whose value is known only once its row group has its place in the file:
    a file offset (``offset``, in the file the row group came from) or the ordinal."""

    offset: int


class RowGroups:
    """The row groups of one file's FileMetaData, encoded ahead with their offsets left open.

    Built where there is time (a worker thread), so that placing them in the joined file
    (:meth:`Footer.add`, in the thread that writes in order) only writes a few numbers.
    """

    def __init__(self, metadata: Struct):
        self.metadata = metadata
        self.rows: list[int] = []
        self.parts: list[list[bytes | _Slot]] = []
        for group in _get(metadata, _META_ROW_GROUPS).items:
            writer = _Writer()
            writer.struct(_with_open_offsets(group))
            self.parts.append(writer.parts())
            self.rows.append(_get(group, _GROUP_NUM_ROWS))


def _placed(parts: list[bytes | _Slot], delta: int, ordinal: int) -> bytes:
    writer = _Writer()
    for part in parts:
        if isinstance(part, _Slot):
            if part.offset == _ORDINAL:
                writer.zigzag(ordinal, 16)
            else:
                writer.zigzag(part.offset + delta, 64)
        else:
            writer.out += part
    return bytes(writer.out)


class Footer:
    """The footer of a file whose row groups are those of other Parquet files, appended in order.

    It is the FileMetaData of the first file (schema, key-value metadata, created_by and the
    rest kept as they are) listing every row group added, ``num_rows`` their sum.
    """

    def __init__(self) -> None:
        self._first: Struct | None = None
        self._groups: list[Encoded] = []  # encoded: a tenth of the memory of decoded ones
        self._rows = 0

    def add(self, groups: RowGroups, delta: int) -> None:
        """Append the row groups of a file, whose bytes now lie ``delta`` bytes further into
        the joined file than in their own."""
        if self._first is None:
            self._first = groups.metadata
        for parts, rows in zip(groups.parts, groups.rows):
            self._groups.append(Encoded(_placed(parts, delta, len(self._groups))))
            self._rows += rows

    def tail(self) -> bytes:
        """The end of the joined file: the encoded FileMetaData, its length and ``PAR1``."""
        if self._first is None:
            raise ValueError("a Parquet footer needs the metadata of at least one file")
        metadata = _map_fields(self._first, {
            _META_NUM_ROWS: lambda _: self._rows,
            _META_ROW_GROUPS: lambda old: Collection(old.elem_type, self._groups),
        })
        body = encode(metadata)
        return body + len(body).to_bytes(4, "little") + MAGIC


def _with_open_offsets(group: Struct) -> Struct:
    """A RowGroup with every file offset in it (its own, its column chunks' and their
    metadata's) and its ordinal (present in encrypted files only) left open as a :class:`_Slot`.

    0 marks an offset that points nowhere (no data starts at 0, the magic does), as in the
    deprecated ColumnChunk.file_offset, which writers set to 0: it stays 0.
    """
    def shift(offset: int) -> Any:
        return _Slot(offset) if offset else 0

    def column_meta(meta: Struct) -> Struct:
        return _map_fields(meta, dict.fromkeys(_COLUMN_OFFSETS, shift))

    def chunk(fields: Struct) -> Struct:
        return _map_fields(fields, {**dict.fromkeys(_CHUNK_OFFSETS, shift), _CHUNK_META_DATA: column_meta})

    def columns(chunks: Collection) -> Collection:
        return Collection(chunks.elem_type, [chunk(c) for c in chunks.items])

    return _map_fields(group, {
        _GROUP_COLUMNS: columns,
        _GROUP_FILE_OFFSET: shift,
        _GROUP_ORDINAL: lambda _: _Slot(_ORDINAL),
    })


def _get(fields: Struct, field_id: int) -> Any:
    for fid, _, value in fields:
        if fid == field_id:
            return value
    raise ValueError(f"Parquet metadata lacks the required field {field_id}")


def _map_fields(fields: Struct, change: dict[int, Callable[[Any], Any]]) -> Struct:
    return [(fid, kind, change[fid](value) if fid in change else value) for fid, kind, value in fields]
