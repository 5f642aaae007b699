"""Tests of normcli.parquet_footer: against bytes derived by hand from the Thrift spec, and
against pyarrow's own files and metadata reader."""
from __future__ import annotations

import math
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from normcli import parquet_footer as pf


def footer_bytes(data: bytes) -> bytes:
    """The FileMetaData bytes of a Parquet file, located by the format's framing."""
    assert data[:4] == data[-4:] == b"PAR1"
    length = int.from_bytes(data[-8:-4], "little")
    return data[-8 - length:-8]


def parquet_bytes(table: pa.Table, **options) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()


# --- The codec against bytes derived by hand from the Compact Protocol spec -------------------

HAND_ENCODED = [
    # (struct, bytes)
    ([(1, pf.I32, 1)], b"\x15\x02\x00"),
    ([(1, pf.I64, -1)], b"\x16\x01\x00"),
    ([(1, pf.I16, -300)], b"\x14\xd7\x04\x00"),
    ([(1, pf.BOOL, True), (2, pf.BOOL, False)], b"\x11\x12\x00"),
    ([(1, pf.BYTE, -2)], b"\x13\xfe\x00"),
    ([(1, pf.DOUBLE, 1.0)], b"\x17" + struct.pack("<d", 1.0) + b"\x00"),
    ([(1, pf.BINARY, b"ab")], b"\x18\x02ab\x00"),
    ([(15, pf.I32, 0)], b"\xf5\x00\x00"),  # a jump of 15 ids still fits the short form
    # a jump of more than 15 ids, then a smaller id: the long form, type then zigzag i16 id
    ([(1, pf.I32, 0), (17, pf.I32, 0), (3, pf.I32, 0)], b"\x15\x00\x05\x22\x00\x05\x06\x00\x00"),
    ([(1, pf.LIST, pf.Collection(pf.I32, [1, -1]))], b"\x19\x25\x02\x01\x00"),
    ([(1, pf.LIST, pf.Collection(pf.I32, list(range(14))))],
     b"\x19\xe5" + bytes(2 * i for i in range(14)) + b"\x00"),
    ([(1, pf.LIST, pf.Collection(pf.I32, list(range(15))))],
     b"\x19\xf5\x0f" + bytes(2 * i for i in range(15)) + b"\x00"),
    ([(1, pf.LIST, pf.Collection(pf.TRUE, [True, False]))], b"\x19\x21\x01\x02\x00"),
    ([(1, pf.SET, pf.Collection(pf.BINARY, [b"x"]))], b"\x1a\x18\x01x\x00"),
    ([(1, pf.MAP, pf.Map(pf.BINARY, pf.I32, [(b"a", 1)]))], b"\x1b\x01\x85\x01a\x02\x00"),
    ([(1, pf.MAP, pf.Map(0, 0, []))], b"\x1b\x00\x00"),
    # a nested struct counts its field ids afresh
    ([(2, pf.STRUCT, [(1, pf.I32, 1)]), (3, pf.I32, 2)], b"\x2c\x15\x02\x00\x15\x04\x00"),
    ([(1, pf.LIST, pf.Collection(pf.STRUCT, [[(20, pf.I64, 1)]]))], b"\x19\x1c\x06\x28\x02\x00\x00"),
]


@pytest.mark.parametrize("fields,data", HAND_ENCODED, ids=[data.hex() for _, data in HAND_ENCODED])
def test_codec_matches_the_spec(fields, data):
    assert pf.decode(data) == fields
    assert pf.encode(fields) == data


def test_encoded_values_are_spliced_in_as_they_are():
    inner = [(1, pf.I32, 1)]
    spliced = [(1, pf.LIST, pf.Collection(pf.STRUCT, [pf.Encoded(pf.encode(inner))]))]
    assert pf.encode(spliced) == pf.encode([(1, pf.LIST, pf.Collection(pf.STRUCT, [inner]))])


def test_truncated_or_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        pf.decode(b"\x15")
    with pytest.raises(OverflowError):
        pf.encode([(1, pf.I16, 1 << 15)])
    with pytest.raises(ValueError):
        pf.read_footer(b"PAR1 not a footer PAR0")


# --- Footers pyarrow writes ----------------------------------------------------------------------

def _tables() -> dict[str, pa.Table]:
    many = {f"c{i}": pa.array([i, None, -i], pa.int32()) for i in range(16)}  # lists of >= 15
    return {
        "strings": pa.table({"s": ["a", None, 'b,"c"', "\u00e9\U0001f600", ""]}),
        "ints": pa.table({"i": pa.array([1, None, -(2**62)], pa.int64()), "j": pa.array([1, 2, 3], pa.int8())}),
        "floats": pa.table({"f": [1.5, math.nan, None, -0.0, math.inf], "g": pa.array([0.5] * 5, pa.float32())}),
        "timestamp": pa.table({"t": pa.array([0, None, 1_700_000_000_000], pa.timestamp("ms", tz="UTC"))}),
        "nested": pa.table({"l": pa.array([[1, 2], None, [], [None]], pa.list_(pa.int64()))}),
        "bool_and_binary": pa.table({"b": [True, None, False], "y": [b"\x00\xff", None, b""]}),
        "many_columns": pa.table(many),
        "empty": pa.table({"s": pa.array([], pa.string()), "f": pa.array([], pa.float64())}),
        "metadata": pa.table({"a": [1]}).replace_schema_metadata({"k": "v" * 300}),
    }


WRITE_OPTIONS = [
    {},
    {"use_dictionary": False},
    {"compression": "none", "write_statistics": False},
    {"version": "1.0"},
    {"row_group_size": 2},
    {"write_page_index": True},
    {"store_schema": False},
]


@pytest.mark.parametrize("options", WRITE_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("name", list(_tables()))
def test_pyarrow_footers_reencode_byte_for_byte(name, options):
    footer = footer_bytes(parquet_bytes(_tables()[name], **options))
    assert pf.encode(pf.decode(footer)) == footer


def _field(fields, field_id):
    return next(value for fid, _, value in fields if fid == field_id)


@pytest.mark.parametrize("name", ["strings", "floats", "many_columns", "nested"])
def test_decoded_footer_agrees_with_pyarrows_reader(name):
    data = parquet_bytes(_tables()[name], row_group_size=2)
    start, meta = pf.read_footer(data)
    assert start == len(data) - 8 - len(footer_bytes(data))
    ref = pq.ParquetFile(pa.BufferReader(data)).metadata
    assert _field(meta, 3) == ref.num_rows
    assert _field(meta, 6).decode() == ref.created_by
    groups = _field(meta, 4).items
    assert len(groups) == ref.num_row_groups
    for g, group in enumerate(groups):
        assert _field(group, 3) == ref.row_group(g).num_rows
        for c, chunk in enumerate(_field(group, 1).items):
            col, ref_col = _field(chunk, 3), ref.row_group(g).column(c)
            assert _field(col, 9) == ref_col.data_page_offset
            assert _field(col, 7) == ref_col.total_compressed_size
            assert _field(col, 5) == ref_col.num_values
            if ref_col.has_dictionary_page:
                assert _field(col, 11) == ref_col.dictionary_page_offset
