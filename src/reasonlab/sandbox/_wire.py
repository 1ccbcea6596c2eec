"""Message framing between the host and the zygote (and the zygote and its sessions).

A frame is a 4-byte big-endian length followed by a JSON object. JSON, not pickle, because the
zygote lives inside the isolation boundary: the host must never unpickle what comes out of it.
This module is stdlib-only because the zygote loads it by path, without importing `reasonlab`.
"""

from __future__ import annotations

import json
import os
import select
import struct

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 30  # from the host (trusted) or to it
MAX_UNTRUSTED_FRAME = 1 << 16  # from a process that ran sandboxed code: its records are tiny


def encode(obj: dict) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, obj: dict, timeout: float | None = None) -> None:
    """Write one whole frame to a file descriptor (pipe or socket), blocking or not.

    With a timeout (for a non-blocking fd), raise TimeoutError if the reader stops reading: the
    zygote must not hang on a child that the code has stopped (SIGSTOP) or that never reads.
    """
    data = memoryview(encode(obj))
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            if not select.select([], [fd], [], timeout)[1]:
                raise TimeoutError("the reader is not reading") from None


def read_frame(fd: int) -> dict | None:
    """Blocking read of one frame; None at end of file."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    body = _read_exact(fd, size)
    return None if body is None else json.loads(body)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Decoder:
    """Incremental decoder for a non-blocking stream: feed bytes, get whole frames back.

    Linear in the bytes fed: each byte is appended once and parsed once (deleting from the front
    of a bytearray is O(1) in CPython). A header announcing more than `limit` bytes raises
    ValueError at once, before anything is buffered, so a peer that sandboxed code controls can
    make us hold at most `limit` bytes.
    """

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[dict]:
        self._buf += data
        frames = []
        while len(self._buf) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf)
            if size > self.limit:
                raise ValueError(f"frame of {size} bytes (at most {self.limit})")
            end = _HEADER.size + size
            if len(self._buf) < end:
                break
            frames.append(json.loads(bytes(self._buf[_HEADER.size : end])))
            del self._buf[:end]
        return frames
