"""Atomic, integrity-checked checkpoints loaded in torch's weights-only mode.

File layout: the 8-byte magic ``FEDLOOP1``, the SHA-256 (32 bytes) of the payload, then the
payload written by ``torch.save`` (tensors, numbers, strings, lists and dicts only, so that
``torch.load(weights_only=True)`` reads it without unpickling arbitrary objects). A write
goes to a temporary file that is renamed over the old one: a crash mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]

MAGIC = b"FEDLOOP1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, tampered with or of another format."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + hashlib.sha256(body).digest() + body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    raw = path.read_bytes()
    if len(raw) < len(MAGIC) + 32 or raw[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path}: not a fedloop checkpoint (bad header; truncated or another format)")
    digest, body = raw[len(MAGIC) : len(MAGIC) + 32], raw[len(MAGIC) + 32 :]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint is truncated or was modified")
    try:
        payload = torch.load(io.BytesIO(body), weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable in weights-only mode ({exc})") from None
    if not isinstance(payload, dict) or "round" not in payload:
        raise CheckpointError(f"{path}: payload is not a fedloop checkpoint")
    return payload
