"""Tests of normcli.io on real files: sources, pieces, decoding, sinks and atomic commit."""
from __future__ import annotations

import contextlib
import errno
import gzip
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normcli.bitmaps import numbers_as_float64
from normcli.errors import DataError, IOFailure, UsageError
from normcli.io import detect_format, gunzip, inputs, open_sink, open_source, outfile
from normcli.io.source import _PARQUET_BATCH_ROWS

TRICKY = (
    b'id,x,note\n'
    b'007,1.5,plain\n'
    b'008,2.25,"has, comma"\n'
    b'009,-3.5,"say ""hi"""\n'
    b'010,4,"line one\nline two, with ""quotes"""\n'
    b'011,,NA\n'
    b'012,6.75,\n'
) + b"".join(b"%03d,%d.5,row %d\n" % (i, i, i) for i in range(13, 40))


def read_all(src, numeric, keep_others=True):
    batches = [src.decode(p) for p in src.pieces(numeric, keep_others)]
    return pa.Table.from_batches(batches) if batches else None


def write_csv(path, batches, schema, **kw):
    with open_sink(str(path), "csv", schema, **kw) as sink:
        for b in batches:
            sink.write(sink.encode(b))


@pytest.mark.parametrize(
    "path,fmt,expected",
    [
        ("a.csv", None, "csv"),
        ("a.CSV.gz", None, "csv"),
        ("a.tsv", None, "tsv"),
        ("a.tsv.gz", None, "tsv"),
        ("a.parquet", None, "parquet"),
        ("a.pq", None, "parquet"),
        ("-", None, "csv"),
        ("a.txt", None, "csv"),
        ("a.csv", "parquet", "parquet"),
    ],
)
def test_detect_format(path, fmt, expected):
    assert detect_format(path, fmt) == expected


def test_detect_format_unknown():
    with pytest.raises(UsageError, match="xlsx"):
        detect_format("a.csv", "xlsx")


def test_csv_tiny_blocks_match_whole_file_read(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(TRICKY)
    with open_source(str(path), block_size=64) as src:
        assert src.columns == ["id", "x", "note"]
        assert src.size == len(TRICKY)
        pieces = list(src.pieces(["x"], keep_others=True))
        assert len(pieces) > 3
        assert max(len(p.data) for p in pieces) <= 64  # bounded by block_size
        # Every piece parses alone into whole records: together they are the data lines.
        assert b"".join(p.data for p in pieces) == TRICKY[TRICKY.index(b"\n") + 1 :]
        assert sum(p.nbytes for p in pieces) == len(TRICKY)
        assert pieces[0].first_line == 2
        for p in pieces:
            assert p.data.endswith(b"\n")
            assert p.data.count(b'"') % 2 == 0
        table = pa.Table.from_batches([src.decode(p) for p in pieces])
    expected = pacsv.read_csv(
        str(path),
        convert_options=pacsv.ConvertOptions(
            column_types={"id": pa.string(), "x": pa.float64(), "note": pa.string()},
            strings_can_be_null=False,
        ),
    )
    # Text comes back as string_view with an empty field as null (and `""` as an empty string).
    assert table.schema.field("id").type == pa.string_view()
    rows = [{k: (None if v == "" else v) for k, v in r.items()} for r in expected.to_pylist()]
    assert table.to_pylist() == rows
    assert table.column("note")[3].as_py() == 'line one\nline two, with "quotes"'


@pytest.mark.parametrize("block_size", [8, 64, 1 << 20])
@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_one_column_file_skips_blank_lines_as_pyarrow_does(tmp_path, block_size, end):
    """Blank lines are skipped on either parse path, at any block size: a one-column file read
    in pieces gives pyarrow's rows, whether or not a piece holds a value that sends it to pyarrow."""
    lines = [b"x", b"1", b"", b"3", b"", b"", b"5.5", b"NA", b"", b"7"] + [b"%d" % i for i in range(40)] + [b"", b"9"]
    path = tmp_path / "one.csv"
    path.write_bytes(end.join(lines) + end)
    expected = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"x": pa.float64()}))
    for keep_others in (True, False):
        with open_source(str(path), block_size=block_size) as src:
            got = read_all(src, ["x"], keep_others)
        assert got.column("x").to_pylist() == expected.column("x").to_pylist()


@pytest.mark.parametrize("quoted", [False, True])
def test_every_spelling_of_nan_reads_as_null_on_either_path(tmp_path, quoted):
    """NaN is null whether or not a quote elsewhere sends the piece to pyarrow, which reads
    only some spellings ("NaN", "nan", "-NaN") as null and the others as a NaN value."""
    values = ["1", "NaN", "NAN", "nan", "+nan", "-NaN", "Nan", "2.5"]
    text = "x,s\n" + "".join(f'{v},{chr(34) + "t" + chr(34) if quoted and i == 0 else "t"}\n'
                                 for i, v in enumerate(values))
    path = tmp_path / "n.csv"
    path.write_text(text)
    with open_source(str(path)) as src:
        got = read_all(src, ["x"], keep_others=True)
    assert got.column("x").to_pylist() == [None if np.isnan(float(v)) else float(v) for v in values]
    assert got.column("x").null_count == 6


@pytest.mark.parametrize("quote", [b"", b'"'])
def test_a_lone_carriage_return_ends_a_line_on_either_path(tmp_path, quote):
    """pyarrow ends a line at a CR not followed by LF, so 'a<CR>b' splits a record: the same
    error whether or not a quote elsewhere sends the piece to pyarrow. CRLF ends stay line ends."""
    path = tmp_path / "cr.csv"
    path.write_bytes(b"x,s\n1,a\rb\n2,c\n3," + quote + b"d" + quote + b"\n")
    with pytest.raises(pa.ArrowInvalid):
        pacsv.read_csv(path)
    with open_source(str(path)) as src, pytest.raises(DataError, match="expected 2 fields, found 1"):
        read_all(src, ["x"])
    path.write_bytes(b"x,s\r\n1,a\r\n2," + quote + b"c" + quote + b"\r\n")
    expected = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"x": pa.float64()}))
    with open_source(str(path)) as src:
        got = read_all(src, ["x"])
    assert got.column("x").to_pylist() == expected.column("x").to_pylist()
    assert got.column("s").to_pylist() == expected.column("s").to_pylist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["row", "row", "row", "blank", "quoted", "gap"]), min_size=1, max_size=300),
       st.data(), st.booleans(), st.booleans(), st.sampled_from([16, 64, 256]))
def test_an_error_names_its_line_after_pieces_decoded_in_threads(tmp_path_factory, kinds, data, crlf, last_eol,
                                                                 block):
    # The reader leaves each piece's lines to be counted by its decode (Polars' rows, or a
    # count on the exact path): the line of a bad value later on must still be exact.
    from normcli.engine import fold

    eol = b"\r\n" if crlf else b"\n"
    text_of = {"row": b"1,2.5,a", "blank": b"", "quoted": b'3,4,"q\nq"', "gap": eol * 40}  # a gap: whole pieces blank
    lines = [text_of[k] for k in kinds]
    bad = data.draw(st.integers(0, len(lines)))
    lines.insert(bad, b"5,oops,b")
    text = b"n,x,t" + eol + eol.join(lines) + (eol if last_eol else b"")
    path = tmp_path_factory.mktemp("lines") / "in.csv"
    path.write_bytes(text)
    expected = 2 + sum(line.count(b"\n") + 1 for line in lines[:bad])  # the header is line 1
    with open_source(str(path), block_size=block) as src, pytest.raises(DataError) as info:
        fold(src, ["x"], lambda batch: batch.num_rows, lambda a, b: a + b, 0, workers=3)
    assert str(info.value) == f"column 'x': value 'oops' on line {expected} is not a number"


def test_a_line_number_waited_for_is_given_up_when_the_read_is_abandoned(tmp_path):
    # A piece's first line waits for the pieces before it to be decoded; a read abandoned
    # before that (its source closed) must not leave the waiting thread hanging.
    path = tmp_path / "in.csv"
    path.write_bytes(b"x\n" + b"1\n" * 100)
    src = open_source(str(path), block_size=16)
    pieces = src.pieces(["x"], keep_others=True)
    next(pieces)
    second = next(pieces)  # the first is never decoded
    waiter = threading.Thread(target=lambda: second.first_line)
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()
    src.close()
    waiter.join(5)
    assert not waiter.is_alive()


def test_a_named_pipe_whose_writer_is_quick_is_read_whole(tmp_path):
    # The writer comes, writes and goes while the reader opens: the file must be opened once
    # (closed and opened again, the pipe has lost its data and waits for a writer for ever).
    fifo = tmp_path / "p.csv"
    data = b"x,y\n" + b"1,2\n" * 100

    def feed() -> None:
        while True:  # a non-blocking open succeeds once a reader is waiting in its open
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                assert exc.errno == errno.ENXIO
                time.sleep(0.001)
        with contextlib.suppress(BrokenPipeError):
            os.write(fd, data)
        os.close(fd)

    for _ in range(3):
        os.mkfifo(fifo)
        rows = []

        def read() -> None:
            with open_source(str(fifo)) as src:
                rows.append(sum(src.decode(p).num_rows for p in src.pieces(["x"], keep_others=True)))

        threads = [threading.Thread(target=f, daemon=True) for f in (feed, read)]
        for t in threads:
            t.start()
        threads[1].join(10)
        assert rows == [100]
        fifo.unlink()


def test_piece_first_line_counts_physical_lines(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(TRICKY)
    with open_source(str(path), block_size=16) as src:
        pieces = []
        for p in src.pieces(["x"], keep_others=True):
            src.decode(p)  # which counts its lines
            pieces.append(p)
        # Re-derive: each piece starts on the line after all newlines before it.
        offset = TRICKY.index(b"\n") + 1
        for p in pieces:
            assert p.first_line == TRICKY[:offset].count(b"\n") + 1
            offset += len(p.data)


def test_numeric_only_and_sample_types(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(TRICKY)
    with open_source(str(path), block_size=64) as src:
        types = src.sample_types()
        assert types["x"] == pa.float64()
        assert types["id"] == pa.int64()  # inference, only for choosing columns
        assert types["note"] == pa.string()
        table = read_all(src, ["x"], keep_others=False)
    assert table.column_names == ["x"]
    assert table.column("x").to_pylist()[:6] == [1.5, 2.25, -3.5, 4.0, None, 6.75]


def test_byte_exact_pass_through(tmp_path):
    data = (
        b"id,date,x,label,empty\n"
        b"007,2012/01/01,1.5,NA,\n"
        b'008,2012/01/02,-0.25,"a,b",z\n'
        b'009,2012-01-03,2.5,"q""q",\n'
        b"010, 2012/01/04 ,1e-7,null,\n"
    )
    src_path, out_path = tmp_path / "in.csv", tmp_path / "out.csv"
    src_path.write_bytes(data)
    with open_source(str(src_path), block_size=32) as src:
        batches = [src.decode(p) for p in src.pieces(["x"], keep_others=True)]
        schema = batches[0].schema
        assert schema.field("x").type == pa.float64()
        assert schema.field("empty").type == pa.string_view()
        write_csv(out_path, batches, schema, input_path=str(src_path))
    assert out_path.read_bytes() == data


def test_a_batch_written_in_many_parts_keeps_every_byte(tmp_path):
    # Polars' writer hands a large batch over in many writes (about 600 KB each): every part
    # must reach the file, in order, as it was when written.
    n = 400_000
    x = [i / 7.0 if i % 11 else None for i in range(n)]
    text = [f"id{i:07d}" if i % 13 else ("" if i % 2 else None) for i in range(n)]
    schema = pa.schema([("x", pa.float64()), ("t", pa.string())])
    batch = pa.record_batch([pa.array(x, pa.float64()), pa.array(text, pa.string())], schema=schema)
    out = tmp_path / "o.csv"
    with open_sink(str(out), "csv", schema) as sink:
        parts = sink.encode(batch)
        assert len(parts) > 2
        sink.write(parts)
    field = {None: "", "": '""'}
    expected = "x,t\n" + "".join(f"{'' if v is None else repr(v)},{field.get(t, t)}\n" for v, t in zip(x, text))
    assert out.read_text() == expected


def test_header_quoted_only_where_needed(tmp_path):
    schema = pa.schema([("a,b", pa.float64()), ("c", pa.string())])
    out = tmp_path / "out.csv"
    write_csv(out, [pa.record_batch([[1.0, None, 2.0], ["x", "", None]], schema=schema)], schema)
    # null is an empty field; an empty string (from Parquet, say) stays apart as ""
    assert out.read_bytes() == b'"a,b",c\n1.0,x\n,""\n2.0,\n'


def test_empty_output_has_header(tmp_path):
    schema = pa.schema([("a", pa.float64())])
    out = tmp_path / "out.csv"
    write_csv(out, [], schema)
    assert out.read_bytes() == b"a\n"


def test_gzip_input(tmp_path):
    path = tmp_path / "in.csv.gz"
    path.write_bytes(gzip.compress(TRICKY))
    with open_source(str(path), block_size=64) as src:
        assert src.format == "csv"
        pieces = list(src.pieces(["x"], keep_others=True))
        table = pa.Table.from_batches([src.decode(p) for p in pieces])
    assert table.num_rows == 33
    assert b"".join(p.data for p in pieces) == TRICKY[TRICKY.index(b"\n") + 1 :]


def _members(data: bytes, cuts: list[int], levels: list[int]) -> bytes:
    """``data`` as gzip members cut at ``cuts`` (an empty member where two cuts meet)."""
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return b"".join(gzip.compress(data[a:b], compresslevel=levels[i % len(levels)], mtime=0)
                    for i, (a, b) in enumerate(zip(bounds, bounds[1:])))


def _gunzipped(packed: bytes, read_size: int) -> bytes:
    out = []
    with gunzip.open_gunzip(io.BytesIO(packed)) as f:
        while chunk := f.read(read_size):
            out.append(chunk)
    return b"".join(out)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000).map(lambda b: b * 40),
       cuts=st.lists(st.integers(min_value=0), max_size=4),
       levels=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=3),
       padding=st.sampled_from([0, 1, 7, 4096, 3 << 20]),
       read_size=st.sampled_from([1, 1000, 1 << 16, 1 << 22]))
def test_gunzip_reads_what_python_gzip_reads(data, cuts, levels, padding, read_size):
    """Every member in turn, and zero bytes after the last one (a padded file) are no data: the
    reference is Python's gzip module."""
    packed = _members(data, cuts, levels) + bytes(padding)
    assert _gunzipped(packed, read_size) == gzip.decompress(packed) == data
    raw, out, buffer = gunzip.GunzipReader(io.BytesIO(packed)), [], bytearray(min(read_size, 700))
    while n := raw.readinto(buffer):  # the raw stream itself, with a buffer that may be small
        out.append(bytes(buffer[:n]))
    assert b"".join(out) == data


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000), cuts=st.lists(st.integers(min_value=0), max_size=3),
       at=st.integers(min_value=0), damage=st.sampled_from(["cut", "flip", "garbage"]))
def test_gunzip_refuses_what_python_gzip_refuses(data, cuts, at, damage):
    """A stream cut short, with a changed byte, or with bytes after a member that are neither
    zeros nor another member is a GzipError wherever Python's gzip module fails on it."""
    packed = _members(data, cuts, [6])
    if damage == "cut":
        packed = packed[:at % len(packed)]
    elif damage == "flip":
        i = at % len(packed)
        packed = packed[:i] + bytes([packed[i] ^ 0x41]) + packed[i + 1:]
    else:
        packed += bytes(at % 3) + b"junk"
    try:
        want = gzip.decompress(packed)
    except (OSError, EOFError, zlib.error):
        want = None
    if want is None:
        with pytest.raises(gunzip.GzipError):
            _gunzipped(packed, 1 << 16)
        return
    try:  # a changed byte that still decompresses (in a name field, say): the same bytes
        assert _gunzipped(packed, 1 << 16) == want
    except gunzip.GzipError as exc:  # zlib checks a header's reserved flags and CRC; Python does not
        assert "header" in str(exc), exc


def test_a_gzip_input_padded_with_zeros_reads_as_the_plain_file(tmp_path):
    plain = tmp_path / "in.csv"
    plain.write_bytes(TRICKY)
    padded = tmp_path / "in.csv.gz"
    padded.write_bytes(gzip.compress(TRICKY[:500]) + gzip.compress(TRICKY[500:]) + bytes(512))
    tables = []
    for path in (plain, padded):
        with open_source(str(path), block_size=64) as src:
            tables.append(pa.Table.from_batches([src.decode(p) for p in src.pieces(["x"], keep_others=True)]))
    assert tables[0].equals(tables[1]) and tables[0].num_rows == 33


def test_tsv_round_trip(tmp_path):
    data = b"k\tv\ta b\n1\t0.5\thello, world\n2\t1.5\t\n"
    src_path, out_path = tmp_path / "in.tsv", tmp_path / "out.tsv"
    src_path.write_bytes(data)
    with open_source(str(src_path)) as src:
        assert src.format == "tsv"
        assert src.columns == ["k", "v", "a b"]
        batches = [src.decode(p) for p in src.pieces(["v"], keep_others=True)]
    with open_sink(str(out_path), "tsv", batches[0].schema) as sink:
        for b in batches:
            sink.write(sink.encode(b))
    assert out_path.read_bytes() == data


def test_bom_is_stripped(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    with open_source(str(path)) as src:
        assert src.columns == ["a", "b"]
        assert read_all(src, ["a", "b"]).column("a").to_pylist() == [1.0]


class _Stdin:
    def __init__(self, data: bytes):
        self.buffer = io.BufferedReader(io.BytesIO(data))


def test_stdin_csv_sample_does_not_consume(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Stdin(TRICKY))
    with open_source("-", block_size=64) as src:
        assert src.size is None
        assert src.sample_types()["x"] == pa.float64()
        table = read_all(src, ["x"])
    assert table.num_rows == 33
    assert table.column("id")[0].as_py() == "007"


def test_stdin_to_stdout_subprocess(tmp_path):
    code = (
        "import sys\n"
        "from normcli.io import open_source, open_sink\n"
        "src = open_source('-', block_size=64)\n"
        "batches = [src.decode(p) for p in src.pieces(['x'], True)]\n"
        "with open_sink(None, 'csv', batches[0].schema) as sink:\n"
        "    for b in batches: sink.write(sink.encode(b))\n"
    )
    data = b'id,x\n007,1.5\n"a\nb",2.5\n'
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", code], input=data, capture_output=True, cwd=root, check=True
    )
    assert result.stdout == data


def test_stdin_parquet(tmp_path, monkeypatch):
    table = pa.table({"a": [1, 2, 3], "s": ["x", "y", "z"]})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    monkeypatch.setattr(sys, "stdin", _Stdin(buf.getvalue().to_pybytes()))
    with open_source("-", fmt="parquet") as src:
        assert src.columns == ["a", "s"]
        out = read_all(src, ["a"])
    assert out.column("a").type == pa.float64()
    assert out.column("s").to_pylist() == ["x", "y", "z"]


def test_parquet_round_trip(tmp_path):
    n = 200_000
    table = pa.table(
        {
            "k": pa.array([f"k{i % 7}" for i in range(n)]),
            "i": pa.array(range(n), pa.int64()),
            "f": pa.array([i / 3 for i in range(n)], pa.float64()),
        }
    )
    src_path, out_path = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(table, src_path)
    with open_source(str(src_path)) as src:
        assert src.format == "parquet"
        assert src.sample_types()["i"] == pa.int64()
        pieces = list(src.pieces(["i", "f"], keep_others=True))
        assert [p.first_line for p in pieces[:2]] == [1, _PARQUET_BATCH_ROWS + 1]
        assert abs(sum(p.nbytes for p in pieces) - src.size) < len(pieces)
        batches = [src.decode(p) for p in pieces]
    schema = batches[0].schema
    assert schema.names == ["k", "i", "f"]
    assert schema.field("i").type == pa.float64()
    assert schema.field("k").type == pa.string()
    with open_sink(str(out_path), "parquet", schema, input_path=str(src_path)) as sink:
        for b in batches:
            sink.write(sink.encode(b))
    back = pq.read_table(out_path)
    assert back.column("f").equals(table.column("f"))
    assert back.column("k").equals(table.column("k"))
    meta = pq.ParquetFile(out_path).metadata
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        encodings = {rg.column(c).path_in_schema: rg.column(c).encodings for c in range(3)}
        assert not any("DICTIONARY" in e for e in encodings["f"])
        assert not any("DICTIONARY" in e for e in encodings["i"])
        assert any("DICTIONARY" in e for e in encodings["k"])


def test_parquet_numeric_only_reads_only_those(tmp_path):
    path = tmp_path / "in.pq"
    pq.write_table(pa.table({"a": [1.0], "b": ["x"], "c": [2]}), path)
    with open_source(str(path)) as src:
        pieces = list(src.pieces(["c", "a"], keep_others=False))
        assert sorted(pieces[0].data.schema.names) == ["a", "c"]
        assert src.decode(pieces[0]).schema.names == ["c", "a"]


_INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


@st.composite
def _number_columns(draw):
    kind = draw(st.sampled_from([*_INT_TYPES, pa.float32()]))
    if kind == pa.float32():
        values = st.floats(width=32, allow_nan=False)
    else:
        bits, signed = kind.bit_width, pa.types.is_signed_integer(kind)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        # the extremes and the neighbours of 2**53, where float64 starts rounding
        values = st.one_of(st.integers(lo, hi), st.sampled_from(
            [v for v in (lo, hi, 2**53 - 1, 2**53 + 1, 2**63 - 1, -(2**53) - 3, 2**64 - 1) if lo <= v <= hi]))
    return kind, draw(st.lists(st.one_of(st.none(), values), min_size=0, max_size=60))


@settings(max_examples=150, deadline=None)
@given(_number_columns())
def test_parquet_integer_and_float32_columns_read_as_arrow_casts_them(tmp_path_factory, column):
    kind, values = column
    path = tmp_path_factory.mktemp("ints") / "in.parquet"
    array = pa.array(values, kind)
    pq.write_table(pa.table({"x": array}), path)
    with open_source(str(path), block_size=7) as src:  # small batches: offsets into shared buffers
        got = pa.concat_arrays([src.decode(p).column("x") for p in src.pieces(["x"], keep_others=False)]
                               or [pa.array([], pa.float64())])
    assert got.equals(array.cast(pa.float64(), safe=False))
    for start in range(min(len(array), 9)):  # slices: values and validity bits at an offset
        part = array.slice(start, max(0, len(array) - start - start // 2))
        assert numbers_as_float64(part).equals(part.cast(pa.float64(), safe=False))


def test_parquet_string_column_not_a_number(tmp_path):
    path = tmp_path / "in.pq"
    pq.write_table(pa.table({"a": ["1", "2", "zz"]}), path)
    with open_source(str(path)) as src:
        with pytest.raises(DataError, match=r"column 'a': value 'zz' on row 3 is not a number"):
            read_all(src, ["a"])


# --- errors --------------------------------------------------------------------------------


def test_ragged_row_line_number(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n5\n")
    with open_source(str(path)) as src:
        with pytest.raises(DataError, match=r"line 4: expected 2 fields, found 1"):
            read_all(src, ["a"])


def test_ragged_row_in_later_piece_after_multiline_field(tmp_path):
    lines = [b"a,b,c"] + [b'%d,"x\ny",%d' % (i, i) for i in range(50)]
    lines.insert(31, b"1,2,3,4")  # a 4-field record, line 1 + 30*2 + 1 = 62
    lines.insert(20, b"")  # a blank line before it, skipped by the parser
    path = tmp_path / "in.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with open_source(str(path), block_size=64) as src:
        with pytest.raises(DataError, match=r"line 63: expected 3 fields, found 4"):
            read_all(src, ["a"])


@pytest.mark.parametrize("body, line, found", [
    (b"x,1,2\ny,3,4,5\nz,5,6\n", 3, 4),  # a long row
    (b"x,1,2\ny,3,4,\n", 3, 4),  # a long row whose extra field is empty
    (b"x,1,\ny,3\nz,5,6,7\n", 3, 2),  # a short and a long row: the total count is right
])
def test_ragged_row_when_only_some_columns_are_read(tmp_path, body, line, found):
    # Fit reads only the numeric columns, here not the first one.
    path = tmp_path / "in.csv"
    path.write_bytes(b"name,a,b\n" + body)
    with pytest.raises(pa.ArrowInvalid):  # the reference: pyarrow refuses the file too
        pacsv.read_csv(str(path))
    with open_source(str(path)) as src:
        with pytest.raises(DataError, match=rf"line {line}: expected 3 fields, found {found}"):
            read_all(src, ["a", "b"], keep_others=False)


@pytest.mark.parametrize("quoted", [False, True])  # the Polars path, and pyarrow's
def test_a_piece_read_for_statistics_holds_its_columns_in_the_order_asked(tmp_path, quoted):
    # numeric columns in the order given, then the kept ones, even when that is every column
    path = tmp_path / "o.csv"
    path.write_bytes(b"a,b,k\n1,2,x\n3,4,%s\n" % (b'"y"' if quoted else b"y"))
    with open_source(str(path)) as src:
        batches = [src.decode(p) for p in src.pieces(["b", "a"], False, ["k"])]
    assert [b.schema.names for b in batches] == [["b", "a", "k"]]
    assert batches[0].column("b").to_pylist() == [2.0, 4.0]


def test_empty_last_fields_when_only_some_columns_are_read(tmp_path):
    rows = [b"t%d,%d,%s" % (i, i, b"" if i % 7 == 0 else b"%d.5" % i) for i in range(3000)]
    path = tmp_path / "in.csv"
    path.write_bytes(b"note,a,x\n" + b"\n".join(rows) + b"\n")
    expected = pacsv.read_csv(str(path))
    with open_source(str(path), block_size=4096) as src:
        got = read_all(src, ["a", "x"], keep_others=False)
    assert got.column("a").to_pylist() == [float(v) for v in expected.column("a").to_pylist()]
    assert got.column("x").to_pylist() == expected.column("x").to_pylist()
    assert got.column("x").null_count == 3000 // 7 + 1


def test_not_a_number_names_column_value_line(tmp_path):
    rows = [b"%d,%d.5,t" % (i, i) for i in range(40)]
    rows[25] = b'25,"4\n2",t'  # a quoted newline moves later lines down by one
    rows[30] = b"30,abc,t"
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,x,s\n" + b"\n".join(rows) + b"\n")
    with pytest.raises(DataError) as info:
        with open_source(str(path), block_size=50) as src:
            read_all(src, ["id", "x"])
    assert str(info.value) == "column 'x': value '4\n2' on line 27 is not a number"


def test_not_a_number_later_line(tmp_path):
    rows = [b"%d,%d.5" % (i, i) for i in range(40)]
    rows[30] = b"30,abc"
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,x\n" + b"\n".join(rows) + b"\n")
    with open_source(str(path), block_size=50) as src:
        with pytest.raises(DataError, match=r"^column 'x': value 'abc' on line 32 is not a number$"):
            read_all(src, ["x"])


def test_missing_requested_column(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n1,2\n")
    with open_source(str(path)) as src:
        with pytest.raises(DataError, match="'zz'"):
            list(src.pieces(["a", "zz"], True))


def test_duplicate_columns(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b,a\n1,2,3\n")
    with pytest.raises(DataError, match="duplicate column names: 'a'"):
        open_source(str(path))
    table = pa.Table.from_arrays([pa.array([1.0])] * 5, names=["b", "a", "c", "b", "a"])
    pq.write_table(table, tmp_path / "in.parquet")
    with pytest.raises(DataError, match="has duplicate column names: 'a', 'b'$"):
        open_source(str(tmp_path / "in.parquet"))


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n"])
def test_empty_input(tmp_path, content):
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="is empty"):
        open_source(str(path))


def test_header_only(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b")
    with open_source(str(path)) as src:
        assert src.columns == ["a", "b"]
        assert src.sample_types() == {"a": pa.null(), "b": pa.null()}
        assert list(src.pieces(["a"], True)) == []


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(IOFailure, match=r"^cannot read '.*nope.csv': No such file or directory$"):
        open_source(str(path))
    with pytest.raises(IOFailure, match="No such file"):
        open_source(str(tmp_path / "nope.parquet"))


def test_output_equal_to_input(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"a\n1\n")
    schema = pa.schema([("a", pa.float64())])
    with pytest.raises(UsageError):
        open_sink(str(path), "csv", schema, input_path=str(path))
    link = tmp_path / "link.csv"
    link.symlink_to(path)
    with pytest.raises(UsageError):
        open_sink(str(link), "csv", schema, input_path=str(path))
    assert path.read_bytes() == b"a\n1\n"


def test_missing_output_directory(tmp_path):
    schema = pa.schema([("a", pa.float64())])
    with pytest.raises(IOFailure, match=r"^cannot write '.*': No such file or directory$"):
        open_sink(str(tmp_path / "no" / "out.csv"), "csv", schema)


def test_a_failed_mkdir_removes_the_directories_made_before_it(tmp_path, monkeypatch):
    real_mkdir, calls = os.mkdir, []

    def mkdir(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # out/a and out/a/b made, then a disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(IOFailure, match="No space left on device"):
        with outfile.parent_directories(str(tmp_path / "out" / "a" / "b" / "c" / "x.csv")):
            pass
    assert len(calls) == 3 and os.listdir(tmp_path) == []


def test_parent_directories_keeps_one_made_meanwhile_by_another_run(tmp_path, monkeypatch):
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if path == str(tmp_path / "out" / "a"):  # another run makes it first
            real_mkdir(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(RuntimeError):
        with outfile.parent_directories(str(tmp_path / "out" / "a" / "b" / "x.csv")):
            raise RuntimeError("the output failed")
    assert os.listdir(tmp_path / "out") == ["a"] and os.listdir(tmp_path / "out" / "a") == []


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_abort_leaves_nothing(tmp_path, fmt):
    schema = pa.schema([("a", pa.float64())])
    target = tmp_path / f"out.{fmt}"
    sink = open_sink(str(target), fmt, schema)
    sink.write(sink.encode(pa.record_batch([[1.0]], schema=schema)))
    assert len(os.listdir(tmp_path)) == 1  # the temp file
    sink.abort()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_in_with_leaves_no_target(tmp_path, exc):
    schema = pa.schema([("a", pa.float64())])
    target = tmp_path / "out.csv"
    target.write_bytes(b"old\n")
    with pytest.raises(exc):
        with open_sink(str(target), "csv", schema) as sink:
            sink.write(sink.encode(pa.record_batch([[1.0]], schema=schema)))
            raise exc()
    assert os.listdir(tmp_path) == ["out.csv"]
    assert target.read_bytes() == b"old\n"  # an existing target is untouched


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("step", ["fsync", "replace", "close"])
def test_interrupt_during_commit_leaves_no_temporary(tmp_path, monkeypatch, fmt, step):
    """SIGINT (KeyboardInterrupt) at the end of a run, while the output is closed, synced or
    renamed into place: the temporary file is removed and an existing target is untouched."""
    schema = pa.schema([("a", pa.float64())])
    target = tmp_path / f"out.{fmt}"
    target.write_bytes(b"old\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with open_sink(str(target), fmt, schema) as sink:
            sink.write(sink.encode(pa.record_batch([[1.0]], schema=schema)))
            if step == "close":
                monkeypatch.setattr(sink._out, "close", interrupted)
            else:
                monkeypatch.setattr(os, step, interrupted)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [target.name]
    assert target.read_bytes() == b"old\n"


def _writeback_threads():
    return [t for t in threading.enumerate() if t.name == "normcli-writeback"]


def _open_in(directory):
    """The files in ``directory`` this process holds a descriptor of (deleted ones included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used
            continue
        if link.startswith(str(directory) + os.sep):
            found.append(link)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_writeback_syncs_behind_the_writer(tmp_path, monkeypatch, fmt):
    """Write-back runs in its own thread while batches are still being written, the file it
    syncs is the output, and the output holds every row, whole."""
    monkeypatch.setattr(outfile.Writeback, "STEP", 64 << 10)
    synced = []
    real = outfile._datasync

    def datasync(fd):
        synced.append((threading.current_thread().name, os.fstat(fd).st_size))
        real(fd)

    monkeypatch.setattr(outfile, "_datasync", datasync)
    schema = pa.schema([("a", pa.float64()), ("t", pa.string())])
    rng = np.random.default_rng(1)
    # 5 MB: more than the output's 1 MiB buffer, so the file grows while batches are written
    batches = [pa.record_batch([rng.normal(size=8000), [f"row {i},{j}" for j in range(8000)]], schema=schema)
               for i in range(20)]
    target = tmp_path / f"out.{fmt}"
    with open_sink(str(target), fmt, schema) as sink:
        for b in batches:
            sink.write(sink.encode(b))
    assert not _writeback_threads() and not _open_in(tmp_path)  # joined, descriptor closed
    size = target.stat().st_size
    assert synced and {name for name, _ in synced} == {"normcli-writeback"}
    sizes = [n for _, n in synced]
    assert sizes == sorted(sizes) and 0 < sizes[0] and sizes[-1] <= size  # the file as it grew
    expected = pa.Table.from_batches(batches)
    got = pacsv.read_csv(target, convert_options=pacsv.ConvertOptions(column_types=schema)) if fmt == "csv" \
        else pq.read_table(target)
    assert got.equals(expected)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_writeback_failure_is_iofailure_and_keeps_the_target(tmp_path, monkeypatch):
    """A disk error met by the write-back thread fails the commit with one IOFailure naming
    the output; the old target stays and no temporary is left."""
    monkeypatch.setattr(outfile.Writeback, "STEP", 4096)

    def failing(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(outfile, "_datasync", failing)
    schema = pa.schema([("a", pa.float64())])
    target = tmp_path / "out.csv"
    target.write_bytes(b"old\n")
    with pytest.raises(IOFailure, match=r"cannot write '.*out.csv': Input/output error"):
        with open_sink(str(target), "csv", schema) as sink:
            for i in range(10):
                sink.write(sink.encode(pa.record_batch([np.arange(100_000.0) + i], schema=schema)))  # 8 MB in all
    assert os.listdir(tmp_path) == ["out.csv"] and target.read_bytes() == b"old\n"
    assert not _writeback_threads() and not _open_in(tmp_path)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_abort_does_not_wait_for_writeback(tmp_path, monkeypatch):
    """An aborted output is removed at once, even while its write-back is still syncing; the
    thread closes its descriptor when the sync returns."""
    monkeypatch.setattr(outfile.Writeback, "STEP", 4096)
    release, started = threading.Event(), threading.Event()

    def slow(fd):
        started.set()
        release.wait(10)

    monkeypatch.setattr(outfile, "_datasync", slow)
    schema = pa.schema([("a", pa.float64())])
    sink = open_sink(str(tmp_path / "out.csv"), "csv", schema)
    for i in range(10):
        sink.write(sink.encode(pa.record_batch([np.arange(100_000.0) + i], schema=schema)))  # 8 MB in all
    assert started.wait(10)
    sink.abort()
    assert os.listdir(tmp_path) == []
    (thread,) = _writeback_threads()
    assert len(_open_in(tmp_path)) == 1  # the thread's, of the deleted temporary
    release.set()
    thread.join(10)
    assert not thread.is_alive() and not _open_in(tmp_path)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_interrupt_while_waiting_for_writeback(tmp_path, monkeypatch):
    """SIGINT while the commit waits for the write-back thread: the temporary goes, the old
    target stays, and the thread closes its descriptor when its sync returns."""
    monkeypatch.setattr(outfile.Writeback, "STEP", 4096)
    release, started = threading.Event(), threading.Event()

    after = []

    def slow(fd):
        started.set()
        release.wait(10)
        try:  # still the temporary's descriptor, not closed (or reused) under the running sync
            after.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError as exc:
            after.append(exc)

    def interrupted(self, timeout=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(outfile, "_datasync", slow)
    schema = pa.schema([("a", pa.float64())])
    target = tmp_path / "out.csv"
    target.write_bytes(b"old\n")
    with pytest.raises(KeyboardInterrupt):
        with open_sink(str(target), "csv", schema) as sink:
            for i in range(10):
                sink.write(sink.encode(pa.record_batch([np.arange(100_000.0) + i], schema=schema)))
            assert started.wait(10)
            (thread,) = _writeback_threads()
            monkeypatch.setattr(thread, "join", interrupted.__get__(thread))
    assert os.listdir(tmp_path) == ["out.csv"] and target.read_bytes() == b"old\n"
    release.set()
    threading.Thread.join(thread, 10)
    assert not thread.is_alive() and not _open_in(tmp_path)
    assert len(after) == 1 and str(after[0]).startswith(str(tmp_path / ".out.csv."))


def test_commit_replaces_target_with_normal_mode(tmp_path):
    schema = pa.schema([("a", pa.float64())])
    target = tmp_path / "out.csv"
    target.write_bytes(b"old\n")
    write_csv(target, [pa.record_batch([[1.0]], schema=schema)], schema)
    assert target.read_bytes() == b"a\n1.0\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.csv"]


def test_write_failure_is_iofailure(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    code = (
        "import sys, pyarrow as pa\n"
        "from normcli.io import open_sink\n"
        "from normcli.errors import IOFailure\n"
        "s = pa.schema([('a', pa.float64())])\n"
        "try:\n"
        "    with open_sink(None, 'csv', s) as sink:\n"
        "        sink.write(sink.encode(pa.record_batch([[1.0] * 10], schema=s)))\n"
        "except IOFailure as e:\n"
        "    sys.stderr.write('caught: ' + str(e))\n"
        "    sys.stdout = None\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [sys.executable, "-c", code], stdout=full, stderr=subprocess.PIPE, cwd=root
        )
    assert b"caught: cannot write standard output: No space left on device" in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_full_disk_while_copying_stdin_names_the_temporary_directory(tmp_path, monkeypatch, fmt):
    """Standard input read where a file is needed is copied to a temporary file first: a copy
    that cannot be written is the temporary directory's failure, not standard input's."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    data = b"a,b\n1,2\n" * 100_000
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    full = open("/dev/full", "wb")
    monkeypatch.setattr(tempfile, "mkstemp", lambda **kw: (os.dup(full.fileno()), str(tmp_path / "copy")))
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **kw: full)
    want = rf"^cannot write a temporary copy of standard input in '{tmp_path}': No space left on device$"
    with pytest.raises(IOFailure, match=want):
        if fmt == "csv":
            inputs.spool_input("-", "csv")
        else:
            open_source("-", fmt="parquet")
    assert os.listdir(tmp_path) == []


def test_parquet_to_terminal_refused(tmp_path, monkeypatch):
    class Tty:
        buffer = io.BytesIO()

        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    with pytest.raises(UsageError):
        open_sink(None, "parquet", pa.schema([("a", pa.float64())]))


# --- The two CSV parsers (Polars fast path, pyarrow exact path) must agree -----------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_text = st.text(alphabet=st.sampled_from(list('ab ,"\n\r07./-NAnul\t')), max_size=6)
_number = st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                    st.integers(-10**6, 10**6).map(str), st.sampled_from(["", "NaN", "nan", "1e5", "-0.0"]))


# Text that needs no quotes, often: a piece without any quote is the one Polars parses.
_plain_or_text = st.one_of(st.text(alphabet=st.sampled_from(list("ab 07./-NAnul\t")), max_size=6), _text)


def _field(value: str) -> str:
    if any(ch in value for ch in ',"\n\r') or value == "":
        return '"' + value.replace('"', '""') + '"' if value != "" else ""
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_plain_or_text, _number, _plain_or_text, st.sampled_from([0, 0, 0, -1, 1])),
                min_size=1, max_size=20),
       st.booleans(), st.booleans())
def test_polars_and_arrow_paths_agree(tmp_path, rows, crlf, keep_others):
    # A row may lose its last field or gain one; fit (keep_others False) parses only x and t.
    eol = "\r\n" if crlf else "\n"

    def line(a, b, c, extra):
        fields = [_field(a), b, _field(c)] + (["9"] if extra > 0 else [])
        return ",".join(fields[:2] if extra < 0 else fields)

    body = eol.join(line(*row) for row in rows)
    path = tmp_path / "p.csv"
    path.write_bytes(("s,x,t" + eol + body + eol).encode())
    src = open_source(str(path))
    try:
        for piece in src.pieces(["x"], keep_others):
            try:
                exact = src._decode_arrow(piece)
            except DataError:
                exact = None  # a ragged row or a bad number: the fast path must not read it
            try:
                fast = src._decode_polars(piece)
            except Exception:
                continue  # the fast path declined: decode() falls back to the exact one
            assert exact is not None
            assert fast.schema.names == exact.schema.names
            assert _rows(fast, keep_others) == _rows(exact, keep_others)
    finally:
        src.close()


@pytest.mark.parametrize("body,fast", [
    (b"a,x,b\n1,2.5,q\n007,,\n,NaN,z\n3,-inf,w\n", True),
    (b"a,x,b\n1,2.5,q\n\n3,4,w\n", False),   # a blank line: Polars reads a row, pyarrow none
    (b"a,x,b\n1,2,q\n3\n", False),          # a short row: Polars would pad it
    (b"a,x,b\n1,NA,q\n", False),            # a null token only pyarrow knows
    (b'a,x,b\n"1,2",3,q\n', False),          # quotes: separators cannot be counted
    (b"a,x,b\n1,2,\n3\n", False),           # a short row beside an empty last field
    (b"a,x,b\n1,2\n3,4\n", False),           # every row short: the last column all null
])
@pytest.mark.parametrize("keep_others", [True, False])  # fit reads the numeric columns only
def test_fast_path_is_taken_only_when_it_is_exact(tmp_path, body, fast, keep_others):
    path = tmp_path / "f.csv"
    path.write_bytes(body)
    src = open_source(str(path))
    piece = next(iter(src.pieces(["x"], keep_others)))
    try:
        got = src._decode_polars(piece)
    except Exception:
        got = None
    assert (got is not None) == fast
    if fast:
        assert _rows(got, keep_others) == _rows(src._decode_arrow(piece), keep_others)
    src.close()


def _spelled(i: int, rng: np.random.Generator) -> str:
    """A number of the many spellings a CSV holds, or a null; row by row."""
    kind = i % 7
    if kind == 0:
        return ""
    if kind == 1:
        return "NaN"
    value = float(1e6 + rng.normal() * 10.0 ** rng.integers(-3, 4))
    return {2: repr(value), 3: f"{value:.3e}", 4: f"{value:.17g}", 5: "-0.0", 6: str(int(value))}[kind]


def _polars_parses(monkeypatch) -> list:
    """A list that gets an item for every piece the CSV reader hands to Polars from now on."""
    from normcli.io import csv_source

    parsed = []
    real = csv_source._CsvSource._decode_polars

    def counted(self, piece):
        parsed.append(piece)
        return real(self, piece)

    monkeypatch.setattr(csv_source._CsvSource, "_decode_polars", counted)
    return parsed


def test_a_small_file_read_for_statistics_is_parsed_without_polars(tmp_path, monkeypatch):
    # Under POLARS_FROM the fit's pieces go to pyarrow, and Polars is not even imported: its
    # import costs more than its parse saves there. The statistics must be those of the Polars path.
    # Nor is pyarrow.compute imported, which the numeric columns need not (another 30-50 ms).
    from normcli import api
    from normcli.io import csv_source

    rng = np.random.default_rng(5)
    rows = [(f"r{i}", _spelled(i, rng), f"{rng.normal():.6f}", f"é{i % 3}") for i in range(3000)]
    path = tmp_path / "small.csv"
    path.write_text("id,x,y,t\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    assert path.stat().st_size < csv_source.POLARS_FROM
    code = ("import json, sys, normcli\n"
            "stats = normcli.fit(sys.argv[1])\n"
            "imported = [m for m in ('polars', 'pyarrow.compute') if m in sys.modules]\n"
            "print(json.dumps([imported, json.loads(stats.to_json())['columns']]))\n")
    env = dict(os.environ, NORMCLI_BLOCK_SIZE="16384")  # several pieces
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, env=env, check=True)
    imported, columns = json.loads(done.stdout)
    assert imported == []

    monkeypatch.setenv("NORMCLI_BLOCK_SIZE", "16384")
    monkeypatch.setattr(csv_source, "POLARS_FROM", 0)
    parsed = _polars_parses(monkeypatch)
    by_polars = json.loads(api.fit(str(path)).to_json())["columns"]
    assert len(parsed) > 1
    assert columns == by_polars

    x = np.array([float(r[1]) if r[1] not in ("", "NaN") else np.nan for r in rows])
    got = columns["x"]["stats"]
    values = x[~np.isnan(x)]
    assert got["count"] == values.size and got["nulls"] == x.size - values.size
    assert math.isclose(got["mean"], math.fsum(values) / values.size, rel_tol=1e-15)
    assert math.isclose(math.sqrt(got["m2"] / got["count"]), float(np.std(values)), rel_tol=1e-12)
    assert (got["min"], got["max"]) == (values.min(), values.max())


def test_whole_rows_of_a_small_file_are_parsed_by_polars(tmp_path, monkeypatch):
    # A transform's pieces: Polars reads them faster, in the layout the CSV writer takes, at any size.
    path = tmp_path / "small.csv"
    path.write_bytes(b"id,x\n" + b"".join(b"r%d,%d.25\n" % (i, i) for i in range(100)))
    parsed = _polars_parses(monkeypatch)
    src = open_source(str(path))
    try:
        assert not src.decode_waits  # a fit of it: pyarrow parses in the worker itself
        table = read_all(src, ["x"], keep_others=True)
    finally:
        src.close()
    assert len(parsed) == 1
    assert table.column("x").to_pylist() == [i + 0.25 for i in range(100)]


def test_a_small_wide_file_read_for_statistics_is_parsed_by_polars(tmp_path, monkeypatch):
    # pyarrow's parse costs more per column: past NARROW columns Polars pays for its import.
    from normcli.io import csv_source

    names = [f"c{i}" for i in range(csv_source.NARROW + 1)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + "".join(",".join(f"{r}.{i}" for i in range(len(names))) + "\n"
                                                      for r in range(3)))
    parsed = _polars_parses(monkeypatch)
    src = open_source(str(path))
    try:
        assert src.decode_waits
        table = read_all(src, names, keep_others=False)
    finally:
        src.close()
    assert len(parsed) == 1
    assert table.column(names[-1]).to_pylist() == [float(f"{r}.{len(names) - 1}") for r in range(3)]


def _rows(batch: pa.RecordBatch, keep_others: bool) -> list[dict]:
    """The batch's rows; NaN as None for a piece read for statistics, which count both as missing
    (a transform's piece must hold null itself)."""
    def value(v):
        return None if not keep_others and isinstance(v, float) and math.isnan(v) else v

    return [{k: value(v) for k, v in row.items()} for row in batch.to_pylist()]


# --- A quoted field left open at the end of the input -----------------------------------------

@pytest.mark.parametrize("body, line", [
    (b'1,a\n2,"b\n3,c\n4,d\n', 3),          # swallows every later record
    (b'1,a\n2,"b\n', 3),                     # in the last record
    (b'1,"a\nb"\n2,"b""\n3,c\n', 4),         # after a closed multi-line field; a doubled quote
    (b'1,a\n2,"b\n' + b"3,c\n" * 2000, 3),  # many pieces' worth of input after it
])
@pytest.mark.parametrize("keep_others", [True, False])  # transform reads every column, fit some
def test_a_quote_left_open_names_the_line_it_opens_on(tmp_path, body, line, keep_others):
    path = tmp_path / "q.csv"
    path.write_bytes(b"x,y\n" + body)
    # pyarrow reads it without complaint, the open field holding the rest: normcli must not
    pacsv.read_csv(str(path), parse_options=pacsv.ParseOptions(newlines_in_values=True))
    with open_source(str(path), block_size=64) as src:
        with pytest.raises(DataError) as info:
            read_all(src, ["x"], keep_others)
    assert str(info.value) == f"'{path}', line {line}: a quoted field is not closed before the end of the file"


@pytest.mark.parametrize("body, line", [
    (b'1,a\n2,"b\n', 3),   # a quote left open: the line it opens on
    (b"1,a\n2,", 3),        # a line that does not end: the record's first line
])
def test_a_record_longer_than_the_bound_stops_the_read(tmp_path, monkeypatch, body, line):
    from normcli.io import csv_source

    monkeypatch.setattr(csv_source, "MAX_RECORD_BYTES", 1 << 20)
    path = tmp_path / "q.csv"
    path.write_bytes(b"x,y\n" + body + b"3" * (3 << 20) + b"\n" + b"4,d\n" * 1000)
    with open_source(str(path), block_size=1 << 16) as src:
        with pytest.raises(DataError) as info:
            read_all(src, ["x"])
        assert src._position() < 2 << 20  # the rest of the input was never held
    assert str(info.value) == (f"'{path}', line {line}: a record runs on for more than 1 MiB "
                               "(a quoted field not closed?)")


@pytest.mark.parametrize("before", [0, 5000])  # the first record (read for the sample), or a later one
@pytest.mark.parametrize("extra", [0, 1])
@pytest.mark.parametrize("keep_others", [True, False])
def test_the_record_bound_is_exact(tmp_path, monkeypatch, before, extra, keep_others):
    # A record of exactly the bound is read, one a byte longer refused, whatever the block size.
    from normcli.io import csv_source

    monkeypatch.setattr(csv_source, "MAX_RECORD_BYTES", 1 << 20)
    long = b"1," + b"y" * ((1 << 20) - 2 + extra)
    path = tmp_path / "r.csv"
    path.write_bytes(b"x,y\n" + b"2,a\n" * before + long + b"\n" + b"3,b\n" * 10)
    with open_source(str(path), block_size=96 << 10) as src:
        if extra:
            with pytest.raises(DataError, match=f"line {before + 2}: a record runs on for more than 1 MiB"):
                read_all(src, ["x"], keep_others)
        else:
            assert read_all(src, ["x"], keep_others).num_rows == before + 11


@pytest.mark.parametrize("header", [b'a"b,c', b'"x\ny",a"b', b'"q""",c"'])
def test_a_header_with_quotes_ends_where_pyarrow_ends_it(tmp_path, header):
    path = tmp_path / "h.csv"
    path.write_bytes(header + b"\n1,2\n3,4\n")
    expected = pacsv.read_csv(str(path), parse_options=pacsv.ParseOptions(newlines_in_values=True))
    with open_source(str(path), block_size=64) as src:
        assert src.columns == expected.column_names
        got = read_all(src, src.columns)
    assert got.to_pydict() == {k: [float(v) for v in vs] for k, vs in expected.to_pydict().items()}


def test_a_quote_left_open_in_the_header(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'x,"y\n1,2\n3,4\n')
    with pytest.raises(DataError, match=r"q.csv', line 1: a quoted field is not closed before the end"):
        open_source(str(path))


@pytest.mark.parametrize("body", [
    b"1,5'10\"\n2,ok\n",         # a quote inside an unquoted field is text, even an odd count
    b'1,"a""\nb"\n2,"c"d\n',     # a doubled quote before a newline; text after a closing quote
])
def test_quotes_that_close_or_are_text_are_read_as_pyarrow_reads_them(tmp_path, body):
    path = tmp_path / "q.csv"
    path.write_bytes(b"x,y\n" + body)
    expected = pacsv.read_csv(str(path), convert_options=pacsv.ConvertOptions(
        column_types={"x": pa.float64(), "y": pa.string()}))
    with open_source(str(path)) as src:
        assert read_all(src, ["x"]).to_pylist() == expected.to_pylist()


_bare = st.text(alphabet=st.sampled_from(list("ab07 .")), min_size=1, max_size=4)
# A quote inside an unquoted field is text, as pyarrow reads it: it must not throw the count of
# quotes, by which pieces are cut, out of step with the quoted fields after it.
_stray = st.builds(lambda a, b: a + '"' + b, _bare, st.text(alphabet=st.sampled_from(list('ab"')), max_size=3))
_quoted = st.text(alphabet=st.sampled_from(list('ab ,"\n')), min_size=1, max_size=8).map(
    lambda v: '"' + v.replace('"', '""') + '"')


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.one_of(_bare, _stray, _quoted), min_size=2, max_size=2), min_size=1, max_size=40),
       st.integers(8, 120), st.booleans())
def test_quotes_inside_unquoted_fields_do_not_move_piece_ends(tmp_path, rows, block, keep_others):
    path = tmp_path / "s.csv"
    path.write_bytes(("a,b\n" + "".join(",".join(r) + "\n" for r in rows)).encode())
    expected = pacsv.read_csv(str(path), parse_options=pacsv.ParseOptions(newlines_in_values=True),
                              convert_options=pacsv.ConvertOptions(column_types={"a": pa.string(), "b": pa.string()}))
    with open_source(str(path), block_size=block) as src:
        pieces = list(src.pieces([], keep_others, keep=["a", "b"]))
        got = pa.Table.from_batches([src.decode(p) for p in pieces])
        assert [p.first_line for p in pieces] == sorted({p.first_line for p in pieces})
    assert got.to_pylist() == expected.to_pylist()


def _start_lines(text: str) -> list[int]:
    """The file line on which each record after the header starts, by Python's csv module."""
    import csv

    reader = csv.reader(io.StringIO(text, newline=""))
    starts, line = [], reader.line_num + 1
    for _ in reader:
        starts.append(line)
        line = reader.line_num + 1
    return starts[1:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(_bare, _stray, _quoted), min_size=1, max_size=30), st.data(),
       st.sampled_from(["ragged", "word"]), st.integers(8, 120), st.booleans())
def test_a_bad_record_after_stray_quotes_is_named_by_its_line(tmp_path, texts, data, bad, block, keep_others):
    # The line of an error is found by reading quotes as pyarrow does: a quote inside an
    # unquoted field is text, and does not open a field that swallows the next line end.
    rows = [f"{t},{i}" for i, t in enumerate(texts)]
    at = data.draw(st.integers(0, len(rows)))
    rows.insert(at, "z,1,2" if bad == "ragged" else "z,oops")
    text = "a,x\n" + "".join(r + "\n" for r in rows)
    path = tmp_path / "s.csv"
    path.write_bytes(text.encode())
    line = _start_lines(text)[at]
    with open_source(str(path), block_size=block) as src, pytest.raises(DataError) as err:
        read_all(src, ["x"], keep_others)
    assert f"line {line}:" in str(err.value) or f"on line {line} " in str(err.value)


def test_a_quoted_field_longer_than_many_pieces(tmp_path):
    # The record is searched for its end as more of it is read, not again from its start.
    lines = b"".join(b"%d,line %d\n" % (i, i) for i in range(3000))
    data = b'id,x,note\n1,2.5,"' + lines.replace(b"\n", b' ""q""\n') + b'"\n' + lines.replace(b",", b",0,")
    path = tmp_path / "long.csv"
    path.write_bytes(data)
    expected = pd.read_csv(path, dtype={"id": str, "note": str}, keep_default_na=False)
    with open_source(str(path), block_size=256) as src:
        got = read_all(src, ["x"])
    assert got.num_rows == len(expected) == 3001
    assert got.column("note").to_pylist() == expected["note"].tolist()
    assert got.column("x").to_pylist() == expected["x"].astype(float).tolist()


# --- Lines that end in a carriage return alone ------------------------------------------------

@pytest.mark.parametrize("data", [
    b"x,y\r1,a\r2,b\r3,c\r",
    b"x,y\r1,a\r2,b\r3,c",              # no line end after the last record
    b"\rx,y\r1,a\r2,b\r3,c\r",          # a blank line first
    b'"x\rx",y\r1,a\r2,b\r3,c\r',       # a carriage return inside a quoted name is text
    b"x,y\r" + b"1,a\r2,b\r3,c\r" * 100_000,  # larger than a block
])
def test_carriage_return_line_ends_are_refused(tmp_path, data):
    path = tmp_path / "cr.csv"
    path.write_bytes(data)
    assert len(pd.read_csv(path)) >= 3  # the reference reads every record: dropping them is loss
    with pytest.raises(DataError) as info:
        open_source(str(path), block_size=1 << 16)
    assert str(info.value) == (f"'{path}': lines end in a carriage return alone (old Mac line endings); "
                               "convert them to \\n first")


def test_a_header_alone_may_end_in_a_carriage_return(tmp_path):
    path = tmp_path / "h.csv"
    path.write_bytes(b"x,y\r")
    with open_source(str(path)) as src:
        assert src.columns == list(pd.read_csv(path).columns) == ["x", "y"]
        assert list(src.pieces(["x"], True)) == []


# --- A quoted empty text ("") is an empty string, an empty field is null -----------------------

QUOTED_EMPTY = (
    b'id,x,note,tag\n'
    b'1,1.5,"",a\n'            # a quoted empty text
    b'2,2.5,,b\n'              # an empty field
    b'3,"",x,""\n'             # "" in the numeric column is null, as before
    b'4,4.5,"say ""hi""",\n'  # doubled quotes inside a field: not an empty text
    b'5,NA,"",""\n'
)


def test_quoted_empty_text_is_kept_apart_from_an_empty_field(tmp_path):
    src_path, out_path = tmp_path / "in.csv", tmp_path / "out.csv"
    src_path.write_bytes(QUOTED_EMPTY)
    with open_source(str(src_path), block_size=40) as src:
        batches = [src.decode(p) for p in src.pieces(["x"], keep_others=True)]
        schema = batches[0].schema
        write_csv(out_path, batches, schema, input_path=str(src_path))
    # Pass-through text is byte for byte as read; x, a number, is written as one (null as empty).
    assert out_path.read_bytes() == QUOTED_EMPTY.replace(b'3,"",', b"3,,").replace(b"5,NA,", b"5,,")
    table = pa.Table.from_batches(batches)
    assert table.column("note").to_pylist() == ["", None, "x", 'say "hi"', ""]
    assert table.column("tag").to_pylist() == ["a", "b", "", None, ""]
    assert table.column("x").to_pylist() == [1.5, 2.5, None, 4.5, None]


def test_quoted_empty_text_when_only_some_columns_are_read(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(QUOTED_EMPTY)
    with open_source(str(path)) as src:  # fit reads the numeric columns and the keys it groups by
        table = pa.Table.from_batches([src.decode(p) for p in src.pieces(["x"], False, ["tag"])])
    assert table.column_names == ["x", "tag"]
    assert table.column("tag").to_pylist() == ["a", "b", "", None, ""]
    assert table.column("x").to_pylist() == [1.5, 2.5, None, 4.5, None]


# --- Blank numbers and bytes that are not UTF-8: fit reads what transform reads ----------------

BLANKS = b"x,note\n1.5,a\n ,b\n\t,c\n3,d\n  ,e\n"


@pytest.mark.parametrize("quoted", [False, True])  # Polars parses a piece without quotes, pyarrow the others
@pytest.mark.parametrize("keep_others", [True, False])
def test_a_number_of_spaces_alone_is_null_on_both_paths(tmp_path, quoted, keep_others):
    path = tmp_path / "b.csv"
    path.write_bytes(BLANKS.replace(b",d", b',"d"') if quoted else BLANKS)
    with open_source(str(path)) as src:
        assert pa.types.is_floating(src.sample_types()["x"])  # numeric, so fit chooses it
        assert read_all(src, ["x"], keep_others).column("x").to_pylist() == [1.5, None, None, 3.0, None]
    # A blank number does not hide a bad one.
    path.write_bytes(path.read_bytes() + b"abc,f\n")
    with open_source(str(path)) as src, pytest.raises(DataError) as info:
        read_all(src, ["x"], keep_others)
    assert str(info.value) == "column 'x': value 'abc' on line 7 is not a number"


def test_bytes_that_are_not_utf8_in_a_column_fit_leaves_out(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes(b"a,b\n1,caf\xc3\xa9\n2,\xff\xfe\n3,x\n")
    with pytest.raises(UnicodeDecodeError):  # the reference: the bytes are not UTF-8
        path.read_bytes().decode()
    for keep_others in (True, False):  # transform reads every column, fit only a
        with open_source(str(path)) as src:
            with pytest.raises(DataError, match=r"u.csv', line 3: column 'b' holds bytes that are not UTF-8$"):
                read_all(src, ["a"], keep_others)
    path.write_bytes(b"a,b\n1,caf\xc3\xa9\n3,x\n")  # UTF-8 beyond ASCII is text like any other
    with open_source(str(path)) as src:
        assert read_all(src, ["a"], keep_others=False).column("a").to_pylist() == [1.0, 3.0]


@pytest.mark.parametrize("bad", [
    b"\xff", b"\x80", b"caf\xc3", b"\xc3(", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
], ids=["ff", "continuation", "cut-short", "bad-continuation", "overlong", "surrogate", "beyond-U+10FFFF"])
@pytest.mark.parametrize("where", [1, 500])  # the first row, or one in a later piece
def test_every_kind_of_bad_utf8_is_refused_where_fit_reads_around_it(tmp_path, bad, where):
    rows = [b"%d,t%d,%d.5" % (i, i, i) for i in range(1000)]
    rows[where] = b"%d,%s,%d.5" % (where, bad, where)
    data = b"a,note,x\n" + b"\n".join(rows) + b"\n"
    with pytest.raises(UnicodeDecodeError):  # the reference: Python's strict UTF-8 decoder
        data.decode()
    path = tmp_path / "u.csv"
    path.write_bytes(data)
    with open_source(str(path), block_size=4096) as src:
        with pytest.raises(DataError, match=rf"line {where + 2}: column 'note' holds bytes that are not UTF-8$"):
            read_all(src, ["a", "x"], keep_others=False)


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"1\xc0\xaf", b"\xed\xa0\x80"], ids=["ff", "overlong", "surrogate"])
@pytest.mark.parametrize("keep_others", [True, False])  # transform, fit
def test_bytes_that_are_not_utf8_in_a_column_of_numbers(tmp_path, bad, keep_others):
    # Named as in a text column, not as pyarrow's conversion error with replacement characters.
    data = b"x,y\n1,2\n" + bad + b",4\n"
    with pytest.raises(UnicodeDecodeError):  # the reference: Python's strict UTF-8 decoder
        data.decode()
    path = tmp_path / "u.csv"
    path.write_bytes(data)
    with open_source(str(path)) as src, pytest.raises(DataError) as info:
        read_all(src, ["x", "y"], keep_others)
    assert str(info.value).endswith("u.csv', line 3: column 'x' holds bytes that are not UTF-8"), str(info.value)
    # U+FFFD written as UTF-8 is text: a value that is not a number
    path.write_bytes(b"x,y\n1,2\n\xef\xbf\xbd,4\n")
    with open_source(str(path)) as src, pytest.raises(DataError) as info:
        read_all(src, ["x", "y"], keep_others)
    assert str(info.value) == "column 'x': value '\ufffd' on line 3 is not a number"


def test_an_output_whose_temporary_file_is_removed_fails_as_an_output_error(tmp_path):
    # The directory cleaned by another job before the first write: an I/O error (exit 5),
    # not an internal error from the write-back's own opening of the file
    schema = pa.schema([("a", pa.float64())])
    batch = pa.RecordBatch.from_arrays([pa.array([1.0, 2.0])], schema=schema)
    with pytest.raises(IOFailure, match="cannot write '.*o.csv': No such file"):
        with open_sink(str(tmp_path / "o.csv"), "csv", schema) as sink:
            (tmp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".o.csv.")]
            tmp.unlink()
            sink.write(sink.encode(batch))
    assert list(tmp_path.iterdir()) == []


def test_a_file_truncated_while_read_is_an_input_error(tmp_path):
    # A log rotated by truncation under a running job: the end of what was read may cut a number
    # in two, so the read must not end as if the file were whole
    path = tmp_path / "in.csv"
    path.write_bytes(b"x,y\n" + b"".join(b"%d,%d.25\n" % (i, i) for i in range(20000)))
    with open_source(str(path), block_size=4096) as src:
        pieces = src.pieces(["x", "y"], keep_others=True)
        src.decode(next(pieces))
        os.truncate(path, path.stat().st_size // 2 + 3)  # mid-record
        with pytest.raises(IOFailure, match=r"in.csv': it was truncated while being read \([\d,]+ of [\d,]+ bytes\)$"):
            for piece in pieces:
                src.decode(piece)


def test_parquet_batches_are_bounded_in_bytes_not_only_in_rows(tmp_path):
    """Wide rows (here 8 KB of text each, dictionary-encoded so that the file's metadata knows
    nothing of their decoded size) come in batches of about a fixed number of bytes; narrow
    rows keep the full batch of rows."""
    from normcli.io.parquet_source import _BATCH_BYTES

    wide, narrow = tmp_path / "w.parquet", tmp_path / "n.parquet"
    pq.write_table(pa.table({"x": np.arange(20_000, dtype=float), "t": ["t" * 8000] * 20_000}), wide)
    pq.write_table(pa.table({"x": np.arange(100_000, dtype=float)}), narrow)
    with open_source(str(wide)) as src:
        batches = [src.decode(p) for p in src.pieces(["x"], keep_others=True)]
    assert sum(b.num_rows for b in batches) == 20_000 and len(batches) > 1
    assert max(b.nbytes for b in batches) <= _BATCH_BYTES * 1.1
    assert pa.concat_arrays([b.column("x") for b in batches]).to_pylist() == list(map(float, range(20_000)))
    with open_source(str(narrow)) as src:
        rows = [p.data.num_rows for p in src.pieces(["x"], keep_others=True)]
    assert rows[0] == _PARQUET_BATCH_ROWS and sum(rows) == 100_000


def test_pieces_of_a_wide_file_hold_rows_enough_within_a_bound(tmp_path):
    """With the default block size a piece of a file of thousands of columns held a few rows
    (2 MiB of 150 KB records), and the per-column work of each piece dominated: pieces now hold
    about 256 records (a record about as long as the header), up to 16 MiB, of whole records.
    A narrow file keeps its 2 MiB pieces, and a block size that is asked for is kept."""
    cols = 3000
    header = ",".join(f"c{i:05d}" for i in range(cols)).encode() + b"\n"
    row = ",".join(["1.2345"] * cols).encode() + b"\n"  # about as long as the header
    path = tmp_path / "wide.csv"
    path.write_bytes(header + row * 600)
    with open_source(str(path)) as src:
        pieces = list(src.pieces([f"c{i:05d}" for i in range(cols)], keep_others=True))
    rows = [p.data.count(b"\n") for p in pieces]
    assert sum(rows) == 600 and all(p.data.endswith(b"\n") for p in pieces)
    assert min(rows[:-1]) >= 256 * len(header) // len(row) - 1 and max(len(p.data) for p in pieces) <= 16 << 20
    with open_source(str(path), block_size=1 << 20) as src:  # asked for: kept (2 MiB would be the default)
        assert max(len(p.data) for p in src.pieces(["c00000"], keep_others=True)) <= 1 << 20
    narrow = tmp_path / "narrow.csv"
    narrow.write_bytes(b"a,b\n" + b"1.5,2.5\n" * 600_000)
    with open_source(str(narrow)) as src:
        assert max(len(p.data) for p in src.pieces(["a", "b"], keep_others=True)) <= 2 << 20


def test_reading_the_umask_from_threads_leaves_it_as_it_was():
    # A host calling the API from several threads: reading the umask by setting it to 0 and back
    # could interleave, and then leave it at 0 for every file the process creates afterwards.
    from normcli.io import outfile

    old_umask, old_interval = os.umask(0o077), sys.getswitchinterval()
    modes: set[int] = set()
    try:
        sys.setswitchinterval(1e-6)

        def read() -> None:
            modes.update(outfile.default_mode() for _ in range(20_000))

        threads = [threading.Thread(target=read) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)
        left = os.umask(old_umask)
    assert (left, modes) == (0o077, {0o600})
