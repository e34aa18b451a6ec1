"""Reading files and texts that may be damaged or hostile, without trusting them.

Every failure is an :class:`~alignsolve.errors.InvalidProblemError` naming the
parameter (``path`` or ``text``), and nothing is allocated from a size the file merely
declares: an ``.npz`` member's header is read and checked against the member's stored
size, and both against a byte limit, before its data is read.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidProblemError

__all__ = ["MAX_FILE_BYTES", "parse_json", "read_npz"]

#: Largest file (or total of an archive's arrays) read by default: 4 GiB.
MAX_FILE_BYTES = 4 * 2**30


def parse_json(text: str | bytes, name: str) -> Any:
    """``json.loads`` whose every failure names ``name`` and the rule.

    Bytes must be UTF-8; nesting too deep for the parser, integers longer than
    Python's conversion limit and malformed JSON are refused.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidProblemError(name, "must be UTF-8 text", f"undecodable byte at offset {exc.start}") from None
    if not isinstance(text, str):
        raise InvalidProblemError(name, "must be JSON text (str or bytes)", type(text).__name__)
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidProblemError(name, "must not nest arrays or objects this deeply", "too deep to parse") from None
    except ValueError as exc:  # JSONDecodeError, and integers beyond the digit limit
        raise InvalidProblemError(name, "must be valid JSON", f"parse error: {str(exc)[:120]}") from None


def read_npz(path: Path, max_bytes: int = MAX_FILE_BYTES) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive, each checked before it is read.

    Refused (naming ``path``): not a zip archive, a damaged one, a member that is not a
    ``.npy`` array, an object (pickled) array, a header whose shape and dtype disagree
    with the member's stored size, and arrays that together exceed ``max_bytes``.
    """
    out: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else None
                if key is None:
                    raise InvalidProblemError("path", "must hold only .npy arrays (an .npz archive)", info.filename)
                total += info.file_size
                if total > max_bytes:
                    raise InvalidProblemError(
                        "path", f"must hold at most max_bytes = {max_bytes} bytes of arrays", f"{total} or more"
                    )
                with archive.open(info) as fh:
                    out[key] = _read_member(fh, info, key)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise InvalidProblemError("path", "must be a readable .npz archive", f"{path} ({str(exc)[:120]})") from None
    return out


def _read_member(fh: Any, info: zipfile.ZipInfo, key: str) -> np.ndarray:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    else:
        raise InvalidProblemError("path", "must hold .npy arrays of format 1.0 to 3.0", f"{key}: version {version}")
    if dtype.hasobject:
        raise InvalidProblemError(
            "path", "must hold only numeric and boolean arrays (alignsolve never unpickles objects)", key
        )
    header = fh.tell() if hasattr(fh, "tell") else None
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if header is not None and declared != info.file_size - header:
        raise InvalidProblemError(
            "path",
            "must hold arrays whose header matches their stored size",
            f"{key}: header declares {declared} bytes, {info.file_size - header} stored",
        )
    data = fh.read(declared)
    if len(data) != declared:
        raise InvalidProblemError("path", "must hold complete arrays", f"{key}: {len(data)} of {declared} bytes")
    arr = np.frombuffer(data, dtype=dtype)
    order = "F" if fortran else "C"
    return arr.reshape(shape, order=order).copy() if shape else arr.reshape(()).copy()
