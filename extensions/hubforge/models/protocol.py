"""The wire between the trusted front and a model's worker process: length-prefixed JSON.

The front (the ``models`` service) keeps one TCP connection per worker and sends one
batch at a time. Each frame is a 4-byte big-endian length and that many bytes of UTF-8
JSON. The first frame on a connection is ``{"key": ...}``: the worker's secret, without
which it answers nothing (other local accounts can reach a loopback port). JSON both
ways, never pickle: the worker runs the model owner's code, and the front must not run
anything it sends back.

Front to worker: ``{"columns": {name: [values]}}`` or ``{"tensor": [rows], "dtype": ...}``.
Worker to front: ``{"ok": true, "predictions": [...], "ms": 3.1}`` or
``{"ok": false, "error": "ValueError: ..."}``.
"""

from __future__ import annotations

import asyncio
import json
import struct

MAX_FRAME = 256 * 2**20
_HEADER = struct.Struct(">I")


class ProtocolError(ConnectionError):
    """The other side sent something that is not a frame (or too large a one)."""


def encode(message: dict) -> bytes:
    data = json.dumps(message, separators=(",", ":"), default=_jsonable).encode()
    return _HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> dict:
    header = await reader.readexactly(_HEADER.size)
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is larger than {MAX_FRAME}")
    data = await reader.readexactly(size)
    try:
        message = json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"frame is not JSON: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def _jsonable(value):
    """numpy and pandas scalars and arrays, as JSON's types (predictions are often numpy)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
