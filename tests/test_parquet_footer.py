"""Tests of normcli.parquet_footer and of the Parquet sink built on it: against bytes derived by
hand from the Thrift spec, and against pyarrow's own files, metadata reader and writer."""
from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normcli import parquet_footer as pf
from normcli.io import open_sink
from normcli.io.sinks import _DICTIONARY_PAGE_LIMIT, _ParquetSink

ROOT = Path(__file__).resolve().parent.parent


def footer_bytes(data: bytes) -> bytes:
    """The FileMetaData bytes of a Parquet file, located by the format's framing."""
    assert data[:4] == data[-4:] == b"PAR1"
    length = int.from_bytes(data[-8:-4], "little")
    return data[-8 - length:-8]


def parquet_bytes(table: pa.Table, **options) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()


def dictionary_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if not pa.types.is_floating(f.type)]


def reference_file(path, schema: pa.Schema, batches) -> bytes:
    """What pyarrow's ParquetWriter writes for these batches, with the sink's options."""
    with pq.ParquetWriter(path, schema, use_dictionary=dictionary_columns(schema),
                          dictionary_pagesize_limit=_DICTIONARY_PAGE_LIMIT, compression="snappy") as w:
        for batch in batches:
            w.write_batch(batch)
    with open(path, "rb") as f:
        return f.read()


def sink_file(path, schema: pa.Schema, batches) -> bytes:
    sink = open_sink(str(path), "parquet", schema)
    for batch in batches:
        sink.write(sink.encode(batch))
    sink.commit()
    with open(path, "rb") as f:
        return f.read()


def _canonical(value):
    # Floats by their bits: NaN equals NaN, -0.0 differs from 0.0.
    return struct.pack("<d", value) if isinstance(value, float) else value


def assert_same_table(got: pa.Table, want: pa.Table) -> None:
    """Table equality in which NaN equals NaN (``Table.equals`` says it does not)."""
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        assert [_canonical(v) for v in got.column(name).to_pylist()] == \
            [_canonical(v) for v in want.column(name).to_pylist()], name


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


# --- The sink against pyarrow's ParquetWriter ---------------------------------------------------

TEXT = ["plain", 'has, comma', 'say "hi"', "line\nbreak", "\u00e9t\u00e9 \U0001f600", "", None]


def _batches(schema: pa.Schema, sizes, seed: int = 0) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        columns = []
        for field in schema:
            if pa.types.is_floating(field.type):
                values = rng.normal(size=n)
                values[rng.random(n) < 0.1] = np.nan
                columns.append(pa.array(values, field.type, mask=rng.random(n) < 0.1))
            elif pa.types.is_integer(field.type):
                columns.append(pa.array(rng.integers(-(2**40), 2**40, n), field.type, mask=rng.random(n) < 0.1))
            elif pa.types.is_timestamp(field.type):
                ticks = pa.array(rng.integers(0, 2**50, n), mask=rng.random(n) < 0.1)
                columns.append(ticks.cast(field.type))
            else:
                columns.append(pa.array([TEXT[i % len(TEXT)] for i in rng.integers(0, 99, n)], field.type))
        out.append(pa.record_batch(columns, schema=schema))
    return out


SCHEMAS = {
    "text_first": pa.schema([("s", pa.string()), ("i", pa.int64()), ("f", pa.float64()),
                             ("t", pa.timestamp("us", tz="UTC"))]),
    "float_first": pa.schema([("f", pa.float64()), ("s", pa.string()), ("n", pa.int64())]),
}


def _assert_same_row_groups(got_path, want_path) -> None:
    got, want = pq.ParquetFile(got_path).metadata, pq.ParquetFile(want_path).metadata
    assert got.num_row_groups == want.num_row_groups
    for g in range(want.num_row_groups):
        assert got.row_group(g).num_rows == want.row_group(g).num_rows
        for c in range(want.num_columns):
            a, b = got.row_group(g).column(c).statistics, want.row_group(g).column(c).statistics
            if b is None:  # an empty row group
                assert a is None
                continue
            assert a.null_count == b.null_count
            assert (a.has_min_max, _canonical(a.min), _canonical(a.max)) == \
                (b.has_min_max, _canonical(b.min), _canonical(b.max))


@pytest.mark.parametrize("schema_name", list(SCHEMAS))
def test_sink_writes_the_bytes_of_pyarrows_writer(tmp_path, schema_name):
    schema = SCHEMAS[schema_name]
    batches = _batches(schema, [1, 1000, 5000, 1, 0, 37])
    got = sink_file(tmp_path / "got.parquet", schema, batches)
    want = reference_file(tmp_path / "want.parquet", schema, batches)
    assert got == want
    assert_same_table(pq.read_table(tmp_path / "got.parquet"), pa.Table.from_batches(batches))
    _assert_same_row_groups(tmp_path / "got.parquet", tmp_path / "want.parquet")


def test_sink_bytes_with_a_dictionary_that_overflows_its_page(tmp_path):
    """A text column of unique values outgrows the 1 MiB dictionary page and falls back to
    plain pages within the column chunk."""
    schema = pa.schema([("s", pa.string()), ("f", pa.float64())])
    n = 60_000
    big = pa.record_batch([pa.array([f"row {i:08d}, a \"long\" text \u00e9" for i in range(n)]),
                           pa.array(np.arange(n, dtype=float))], schema=schema)
    batches = [big, *_batches(schema, [3])]
    got = sink_file(tmp_path / "got.parquet", schema, batches)
    want = reference_file(tmp_path / "want.parquet", schema, batches)
    meta = pq.ParquetFile(tmp_path / "want.parquet").metadata
    assert "PLAIN" in meta.row_group(0).column(0).encodings  # the fallback did happen
    assert got == want


def test_unique_text_falls_back_to_plain_pages_and_categories_keep_their_dictionary(tmp_path):
    """Within one row group of the engine's size, a column of unique ids stops being
    dictionary-encoded early, while a column of a few thousand categories stays so entirely."""
    n = 32_768
    rng = np.random.default_rng(3)
    schema = pa.schema([("id", pa.string()), ("city", pa.string()), ("f", pa.float64())])
    batch = pa.record_batch([pa.array([f"id{i:09d}" for i in range(n)]),
                             pa.array([f"city {k}" for k in rng.integers(0, 3000, n)]),
                             pa.array(rng.normal(size=n))], schema=schema)
    got = sink_file(tmp_path / "got.parquet", schema, [batch])
    assert got == reference_file(tmp_path / "want.parquet", schema, [batch])
    # pyarrow's defaults (a 1 MiB dictionary page) for comparison.
    pq.write_table(pa.Table.from_batches([batch]), tmp_path / "default.parquet",
                   use_dictionary=["id", "city"], compression="snappy")
    got_group = pq.ParquetFile(tmp_path / "got.parquet").metadata.row_group(0)
    default_group = pq.ParquetFile(tmp_path / "default.parquet").metadata.row_group(0)

    def dictionary_page(column) -> int:  # bytes between the dictionary page and the first data page
        return column.data_page_offset - column.dictionary_page_offset

    assert dictionary_page(default_group.column(0)) > _DICTIONARY_PAGE_LIMIT  # ids: all of them
    assert 0 < dictionary_page(got_group.column(0)) < _DICTIONARY_PAGE_LIMIT  # ids: the first few
    # The categories' chunk is what pyarrow writes by default: one dictionary for all of it.
    assert got_group.column(1).total_uncompressed_size == default_group.column(1).total_uncompressed_size
    assert not got_group.column(2).has_dictionary_page
    assert_same_table(pq.read_table(tmp_path / "got.parquet"), pa.Table.from_batches([batch]))


def test_sink_bytes_when_one_batch_makes_several_row_groups(tmp_path):
    schema = pa.schema([("i", pa.int64())])
    rows = 1024 * 1024 + 10  # above ParquetWriter's default row group length
    batches = [pa.record_batch([pa.array(np.arange(rows))], schema=schema), *_batches(schema, [5])]
    got = sink_file(tmp_path / "got.parquet", schema, batches)
    want = reference_file(tmp_path / "want.parquet", schema, batches)
    assert pq.ParquetFile(tmp_path / "want.parquet").metadata.num_row_groups == 3
    assert got == want


def test_sink_bytes_when_encoded_in_threads_and_cast_from_string_view(tmp_path):
    """As the engine uses it: batches (text as string_view) encoded concurrently, written in order."""
    schema = SCHEMAS["text_first"]
    batches = _batches(schema, [700, 1, 2500, 90, 1200, 3])
    viewed = [b.cast(pa.schema([pa.field("s", pa.string_view()), *list(schema)[1:]])) for b in batches]
    sink = open_sink(str(tmp_path / "got.parquet"), "parquet", schema)
    with ThreadPoolExecutor(4) as pool:
        for encoded in list(pool.map(sink.encode, viewed)):
            sink.write(encoded)
    sink.commit()
    want = reference_file(tmp_path / "want.parquet", schema, batches)
    assert (tmp_path / "got.parquet").read_bytes() == want


def test_empty_output_is_a_zero_row_file_of_the_schema(tmp_path):
    schema = SCHEMAS["text_first"]
    got = sink_file(tmp_path / "got.parquet", schema, [])
    assert got == reference_file(tmp_path / "want.parquet", schema, [])
    table = pq.read_table(tmp_path / "got.parquet")
    assert table.num_rows == 0
    assert table.schema == schema


class _Pipe(io.BytesIO):
    """A stream that cannot seek or tell, as a pipe."""

    def seekable(self) -> bool:
        return False

    def seek(self, *args):
        raise io.UnsupportedOperation("seek")

    def tell(self):
        raise io.UnsupportedOperation("tell")


def test_sink_to_a_non_seekable_stream(tmp_path):
    schema = SCHEMAS["float_first"]
    batches = _batches(schema, [10, 1, 300])
    pipe = _Pipe()
    sink = _ParquetSink(None, schema, pipe, None)
    for batch in batches:
        sink.write(sink.encode(batch))
    sink.commit()
    assert pipe.getvalue() == reference_file(tmp_path / "want.parquet", schema, batches)
    assert_same_table(pq.read_table(pa.BufferReader(pipe.getvalue())), pa.Table.from_batches(batches))


def test_sink_to_stdout_through_a_real_pipe(tmp_path):
    code = (
        "import pyarrow as pa\n"
        "from normcli.io import open_sink\n"
        "s = pa.schema([('x', pa.float64()), ('k', pa.string())])\n"
        "with open_sink(None, 'parquet', s) as sink:\n"
        "    for n in (3, 1, 5):\n"
        "        b = pa.record_batch([pa.array([0.5 * i for i in range(n)]), pa.array(['a,b'] * n)], schema=s)\n"
        "        sink.write(sink.encode(b))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, cwd=ROOT).stdout
    table = pq.read_table(pa.BufferReader(out))
    assert table.column("x").to_pylist() == [0.0, 0.5, 1.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert pq.ParquetFile(pa.BufferReader(out)).metadata.num_row_groups == 3


def test_an_aborted_stream_gets_no_footer():
    schema = SCHEMAS["float_first"]
    pipe = _Pipe()
    sink = _ParquetSink(None, schema, pipe, None)
    sink.write(sink.encode(_batches(schema, [20])[0]))
    sink.abort()
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(pa.BufferReader(pipe.getvalue()))


# --- Any split of any table reads back as the table -----------------------------------------

_floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
_ints = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
_texts = st.one_of(st.none(), st.text(max_size=8))


@st.composite
def _split_tables(draw):
    rows = draw(st.lists(st.tuples(_floats, _ints, _texts), max_size=40))
    table = pa.table({
        "f": pa.array([r[0] for r in rows], pa.float64()),
        "i": pa.array([r[1] for r in rows], pa.int64()),
        "s": pa.array([r[2] for r in rows], pa.string()),
    })
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=6)))
    bounds = [0, *cuts, len(rows)]
    return table, [table.slice(a, b - a).combine_chunks() for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_split_tables())
def test_any_split_reads_back_as_the_table(split):
    table, pieces = split
    pipe = _Pipe()
    sink = _ParquetSink(None, table.schema, pipe, None)
    for piece in pieces:
        for batch in piece.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]:
            sink.write(sink.encode(batch))
    sink.commit()
    data = pa.BufferReader(pipe.getvalue())
    assert_same_table(pq.read_table(data), table)
    meta = pq.ParquetFile(pa.BufferReader(pipe.getvalue())).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [p.num_rows for p in pieces]
