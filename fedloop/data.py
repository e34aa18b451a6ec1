"""Federated datasets: a synthetic latent-domains task, scikit-learn's digits, MNIST-family IDX files, partitions.

Every loader returns a :class:`FederatedData`: one ``(x, y)`` pair of tensors per client,
a held-out test set, and the clients' natural ids where the data has them.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "FederatedData",
    "dirichlet_label_partition",
    "load_dataset",
    "load_digits_data",
    "load_idx_folder",
    "make_latent_domains",
    "read_idx",
    "shard_partition",
]


@dataclass
class FederatedData:
    """Client shards and a test set.

    Attributes
    ----------
    clients : list of (Tensor, Tensor)
        ``(x, y)`` per client; x is float32 (n_i, *input_shape), y int64 (n_i,).
    test : (Tensor, Tensor)
    n_classes : int
    input_shape : tuple of int
    client_ids : list of str
        Natural ids when the data has them (writers, domains), else ``client-<i>``.
    info : dict
        How it was made (JSON-ready).
    """

    clients: list[tuple[torch.Tensor, torch.Tensor]]
    test: tuple[torch.Tensor, torch.Tensor]
    n_classes: int
    input_shape: tuple[int, ...]
    client_ids: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> list[int]:
        return [int(y.shape[0]) for _, y in self.clients]


# -- partitions -----------------------------------------------------------------------------------


def dirichlet_label_partition(
    labels: np.ndarray, n_clients: int, alpha: float, rng: np.random.Generator, *, min_size: int = 2
) -> list[np.ndarray]:
    """Split sample indices so that each class is spread over clients by Dirichlet(alpha) proportions.

    Small alpha gives each client few classes. Redraws (at most 100 times) until every client
    holds at least ``min_size`` samples.
    """
    if n_clients < 1:
        raise ValueError(f"n_clients: must be >= 1; got {n_clients}")
    if not alpha > 0:
        raise ValueError(f"alpha: must be > 0; got {alpha}")
    labels = np.asarray(labels)
    if labels.size < n_clients * min_size:
        raise ValueError(
            f"n_clients: {n_clients} clients need at least {n_clients * min_size} samples; got {labels.size}"
        )
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(n_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_clients, alpha))) * idx.size).astype(int)[:-1]
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.array(sorted(p), dtype=np.int64) for p in parts]
    raise ValueError(f"alpha: {alpha} leaves some of {n_clients} clients with fewer than {min_size} samples")


def shard_partition(
    labels: np.ndarray, n_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The pathological split: sort by label, cut into ``n_clients * shards_per_client`` shards, deal them out."""
    labels = np.asarray(labels)
    n_shards = n_clients * shards_per_client
    if n_clients < 1 or shards_per_client < 1 or labels.size < n_shards:
        raise ValueError(
            f"n_clients, shards_per_client: need 1 <= n_clients * shards_per_client <= {labels.size} samples; "
            f"got {n_clients} x {shards_per_client}"
        )
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards).reshape(n_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]


# -- synthetic latent domains ----------------------------------------------------------------------


def make_latent_domains(
    n_clients: int = 40,
    *,
    n_domains: int = 4,
    samples_per_client: int = 120,
    test_size: int = 2000,
    n_features: int = 16,
    n_classes: int = 4,
    alpha: float = 0.3,
    noise: float = 0.1,
    domain_shift: float = 3.0,
    seed: int = 0,
) -> FederatedData:
    """D domains over shared inputs, each labelled by its own random teacher.

    ``x = z + domain_shift * mu_d`` with ``z ~ N(0, I)`` and a unit vector ``mu_d`` per
    domain (the router can tell the domains apart); the label is the argmax of domain
    d's linear teacher on z plus Gaussian ``noise`` on its logits. Since the teachers
    disagree, one network must learn D functions: experts that specialise by domain pay.
    Each client draws its domain mixture from Dirichlet(alpha) (small alpha: one domain
    per client) and its size from a lognormal around ``samples_per_client``. The test
    set is balanced over domains. Client ids name their dominant domain.
    """
    if n_clients < 1 or n_domains < 1 or samples_per_client < 1:
        raise ValueError(
            "n_clients, n_domains, samples_per_client: must be >= 1; "
            f"got {n_clients}, {n_domains}, {samples_per_client}"
        )
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n_domains, n_features))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    w = rng.normal(size=(n_domains, n_features, n_classes)) / np.sqrt(n_features)

    def draw(domains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = rng.normal(size=(domains.size, n_features))
        x = z + domain_shift * mu[domains]
        # Each domain labels the shared part z by its own linear teacher.
        logits = np.einsum("nf,nfc->nc", z, w[domains]) + noise * rng.normal(size=(domains.size, n_classes))
        return x.astype(np.float32), logits.argmax(axis=1).astype(np.int64)

    mixtures = rng.dirichlet(np.full(n_domains, alpha), size=n_clients)
    sizes = np.maximum(8, rng.lognormal(np.log(samples_per_client), 0.5, size=n_clients).astype(int))
    clients, ids = [], []
    for i in range(n_clients):
        domains = rng.choice(n_domains, size=sizes[i], p=mixtures[i])
        x, y = draw(domains)
        clients.append((torch.from_numpy(x), torch.from_numpy(y)))
        ids.append(f"client-{i}-d{int(mixtures[i].argmax())}")
    xt, yt = draw(np.arange(test_size) % n_domains)
    info = dict(
        dataset="synthetic",
        n_domains=n_domains,
        alpha=alpha,
        noise=noise,
        domain_shift=domain_shift,
        n_features=n_features,
        seed=seed,
    )
    return FederatedData(clients, (torch.from_numpy(xt), torch.from_numpy(yt)), n_classes, (n_features,), ids, info)


# -- real data --------------------------------------------------------------------------------------


def _split_clients(
    x: np.ndarray, y: np.ndarray, n_clients: int, partition: str, alpha: float, shards: int, rng: np.random.Generator
) -> list[np.ndarray]:
    if partition == "dirichlet":
        return dirichlet_label_partition(y, n_clients, alpha, rng)
    if partition == "shards":
        return shard_partition(y, n_clients, shards, rng)
    if partition == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(y.size), n_clients)]
    raise ValueError(f"partition: must be one of 'dirichlet', 'shards', 'iid'; got {partition!r}")


def _package(
    x: np.ndarray,
    y: np.ndarray,
    xt: np.ndarray,
    yt: np.ndarray,
    parts: list[np.ndarray],
    n_classes: int,
    info: dict[str, Any],
) -> FederatedData:
    clients = [(torch.from_numpy(x[p]), torch.from_numpy(y[p])) for p in parts]
    ids = [f"client-{i}" for i in range(len(parts))]
    return FederatedData(
        clients, (torch.from_numpy(xt), torch.from_numpy(yt)), n_classes, tuple(x.shape[1:]), ids, info
    )


def load_digits_data(
    n_clients: int = 20,
    *,
    partition: str = "dirichlet",
    alpha: float = 0.5,
    shards: int = 2,
    test_fraction: float = 0.2,
    image: bool = False,
    seed: int = 0,
) -> FederatedData:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), split over clients.

    ``image=True`` keeps the (1, 8, 8) shape for the CNN encoder; otherwise 64 features.
    Pixel values are scaled to [0, 1].
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    x = x[:, None] if image else x.reshape(len(x), -1)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(y.size)
    n_test = round(test_fraction * y.size)
    test, train = order[:n_test], order[n_test:]
    parts = _split_clients(x[train], y[train], n_clients, partition, alpha, shards, rng)
    info = dict(dataset="digits", partition=partition, alpha=alpha, shards=shards, seed=seed)
    return _package(x[train], y[train], x[test], y[test], parts, 10, info)


_IDX_TYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


#: Largest IDX body :func:`read_idx` reads (MNIST's training images are 47 MB).
IDX_MAX_BYTES = 2**31


def read_idx(path: str | Path, *, max_bytes: int = IDX_MAX_BYTES) -> np.ndarray:
    """Read one IDX file (the MNIST format; ``.gz`` is decompressed as it is read).

    Layout: two zero bytes, a type code (0x08 uint8 ... 0x0E float64), the number of
    dimensions (1 to 8), then each dimension as a big-endian uint32, then the data. The
    header is checked before the body is read: a wrong magic number, a truncated file,
    a body longer or shorter than the header promises, or a declared size above
    ``max_bytes`` raises ValueError naming the file and the rule (nothing is allocated
    from the declared size alone).
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                raise ValueError(f"{path}: not an IDX file (bad magic number {head[:4].hex()})")
            ndim = head[3]
            if not 1 <= ndim <= 8:
                raise ValueError(f"{path}: an IDX file must have 1 to 8 dimensions; the header says {ndim}")
            dims = fh.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX header")
            shape = struct.unpack(f">{ndim}I", dims)
            dtype = np.dtype(_IDX_TYPES[head[2]])
            expected = math.prod(shape) * dtype.itemsize
            if expected > max_bytes:
                raise ValueError(
                    f"{path}: the IDX header declares {expected} bytes of data (shape {shape}), "
                    f"more than max_bytes = {max_bytes}"
                )
            body = fh.read(expected + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: unreadable IDX file ({exc})") from None
    if len(body) != expected:
        what = "more bytes than" if len(body) > expected else f"{len(body)} bytes, fewer than"
        raise ValueError(f"{path}: IDX body has {what} the header promises {expected}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: no {stem} (or {stem}.gz); expected the MNIST-family file names")


def load_idx_folder(
    folder: str | Path,
    n_clients: int = 20,
    *,
    partition: str = "dirichlet",
    alpha: float = 0.5,
    shards: int = 2,
    image: bool = True,
    seed: int = 0,
) -> FederatedData:
    """MNIST, Fashion-MNIST, KMNIST... from IDX files in ``folder`` (nothing is downloaded).

    Expects ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data_dir: {folder} is not a folder")
    x = read_idx(_find(folder, "train-images-idx3-ubyte")).astype(np.float32) / 255.0
    y = read_idx(_find(folder, "train-labels-idx1-ubyte")).astype(np.int64)
    xt = read_idx(_find(folder, "t10k-images-idx3-ubyte")).astype(np.float32) / 255.0
    yt = read_idx(_find(folder, "t10k-labels-idx1-ubyte")).astype(np.int64)
    if x.shape[0] != y.shape[0] or xt.shape[0] != yt.shape[0]:
        raise ValueError(f"{folder}: image and label counts differ ({x.shape[0]} vs {y.shape[0]})")
    if image:
        x, xt = x[:, None], xt[:, None]
    else:
        x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    rng = np.random.default_rng(seed)
    parts = _split_clients(x, y, n_clients, partition, alpha, shards, rng)
    info = dict(dataset="idx", folder=str(folder), partition=partition, alpha=alpha, seed=seed)
    return _package(x, y, xt, yt, parts, int(max(y.max(), yt.max())) + 1, info)


DATASETS = ("synthetic", "digits", "idx", "mnist", "fashion", "multidomain", "shakespeare")


def load_dataset(
    name: str, n_clients: int, *, seed: int = 0, data_dir: str | None = None, **options: Any
) -> FederatedData:
    """Dispatch on ``name`` (one of :data:`DATASETS`)."""
    if name == "synthetic":
        return make_latent_domains(n_clients, seed=seed, **options)
    if name == "digits":
        return load_digits_data(n_clients, seed=seed, **options)
    if name == "idx":
        if data_dir is None:
            raise ValueError("data_dir: the idx dataset needs the folder holding the IDX files")
        return load_idx_folder(data_dir, n_clients, seed=seed, **options)
    # The real datasets read the fetch cache; data_dir, when given, is that cache.
    from . import real_data

    if name in ("mnist", "fashion"):
        return real_data.load_image_dataset(name, n_clients, seed=seed, cache=data_dir, **options)
    if name == "multidomain":
        return real_data.load_multidomain(n_clients, seed=seed, cache=data_dir, **options)
    if name == "shakespeare":
        return real_data.load_shakespeare(n_clients, seed=seed, cache=data_dir, **options)
    raise ValueError(f"dataset: must be one of {', '.join(DATASETS)}; got {name!r}")
