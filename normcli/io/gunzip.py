"""Reading a gzip stream: the decompressed bytes of every member in turn, as ``gzip -d`` and
Python's ``gzip`` module read them, zero bytes that pad the file after its last member included
(they are no data). zlib checks each member's header (reserved flags, header CRC: more strictly
than Python, as RFC 1952 asks), CRC and length; a file cut short, damaged or followed by
anything but zeros or another member raises :class:`GzipError`. An empty input is empty.
"""
from __future__ import annotations

import io
import zlib
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"  # the first bytes of every gzip member
_CHUNK = 1 << 20  # compressed bytes read at a time
_GZIP = 16 + zlib.MAX_WBITS  # zlib's gzip wrapper: header, CRC-32 and length checked


class GzipError(ValueError):
    """The stream is not whole, well-formed gzip."""


def open_gunzip(raw: BinaryIO) -> io.BufferedReader:
    """The decompressed content of the gzip stream ``raw`` (any object with ``read``) as a
    buffered stream, whose ``read(n)`` and ``readinto`` fill what they are given."""
    return io.BufferedReader(GunzipReader(raw))


class GunzipReader(io.RawIOBase):
    """The decompressed content of the gzip stream ``raw``, as a raw stream (short reads)."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._member = zlib.decompressobj(_GZIP)
        self._tail = b""  # compressed bytes read but not yet given to the decompressor
        self._empty = True  # no byte read at all: an empty input, empty content (as Python reads it)
        self._left = b""  # decompressed bytes a smaller buffer had no room for
        self._end = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        """Fill ``buffer`` with up to its length of decompressed bytes; 0 only at the end."""
        with memoryview(buffer) as view:
            while self._left or not self._end:
                data = self._left or self._decompress(len(view))
                if data:
                    n = min(len(data), len(view))  # more only from a final flush
                    view[:n], self._left = data[:n], data[n:]
                    return n
        return 0

    def _decompress(self, limit: int) -> bytes:
        """Up to ``limit`` decompressed bytes; b"" when a member or the input ended instead."""
        member = self._member
        if member.eof:
            self._next_member(member.unused_data)
            return b""
        data = member.unconsumed_tail or self._tail or self._raw.read(_CHUNK)
        self._tail = b""
        if not data:
            if self._empty:
                self._end = True
                return b""
            out = member.flush()  # output zlib still holds, if any
            if not member.eof:
                raise GzipError("cut short: it ends inside a member")
            return out
        self._empty = False
        try:
            return member.decompress(data, limit)
        except zlib.error as exc:
            raise GzipError(str(exc)) from None

    def _next_member(self, rest: bytes) -> None:
        """After a member: the next one starts in ``rest`` or after it, past any zero padding."""
        while True:
            rest = rest.lstrip(b"\0")
            if rest:
                break
            rest = self._raw.read(_CHUNK)
            if not rest:
                self._end = True
                return
        if not rest.startswith(GZIP_MAGIC[:len(rest)]):
            raise GzipError("bytes that are not gzip follow a member")
        self._member = zlib.decompressobj(_GZIP)
        self._tail = rest
