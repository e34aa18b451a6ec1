"""Federated tasks on real data: MNIST, Fashion-MNIST, their multi-domain mix, Shakespeare by speaker.

The files come from the cache that ``fedloop fetch`` fills (:mod:`fedloop.fetch`); every
loader verifies them (MD5) and raises :class:`~fedloop.fetch.DatasetMissing`, naming the
fetch command, when they are absent.

* ``mnist`` / ``fashion``: one image dataset split over clients, by Dirichlet label skew
  (``partition="dirichlet"``, ``alpha``), McMahan's pathological shards (``"shards"``:
  sort by label, ``n_clients * shards`` shards, each client gets ``shards`` of them) or
  uniformly (``"iid"``).
* ``multidomain``: each client holds one *domain* (by default MNIST, MNIST rotated by 90
  degrees, Fashion-MNIST and inverted Fashion-MNIST; ``domains`` chooses among
  :data:`DOMAINS`), clients dealt round-robin to domains, with Dirichlet label skew inside
  its domain. The ten labels are shared across domains, so the same output means a digit
  in one domain and a garment in another: what a client needs depends on its domain,
  which is what experts can specialise on. With ``relabel=True`` every domain but the
  first also has its own labelling (a fixed permutation of the ten labels, the same on
  every seed): the same digit needs a different answer in different domains, so one small
  network cannot serve all domains at once and experts that split them can. The test set
  draws ``test_per_domain`` images from each domain's test split.
* ``shakespeare``: LEAF's next-character task, one client per (play, speaker) with at
  least ``min_chars`` characters of speech; each sample is ``seq_len`` characters
  (token ids) and the label the next character. Each client's last ``test_frac`` of its
  windows goes to the test set (the speaker's own later lines). With ``scripts=S > 1``
  each client writes in one of S *scripts*, dealt round-robin: script ``s`` writes the
  same characters with its own ids (``s * len(VOCAB) + id``), as clients typing the same
  language in different alphabets would. A speaker's characters are, to a router that
  reads them, close to a random sample of the pooled text (``benchmarks/results/
  client_skew.md``); the scripts give the task a heterogeneity an assignment can align.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import FederatedData, _package, _split_clients, read_idx
from .fetch import idx_folder, shakespeare_file

__all__ = ["DOMAINS", "SIDE", "VOCAB", "load_image_dataset", "load_multidomain", "load_shakespeare", "pool_images"]

#: Transformed variants of the two image datasets (the domain's name says the transform).
DOMAINS = tuple(
    f"{base}{variant}"
    for base in ("mnist", "fashion")
    for variant in ("", "-rotated", "-inverted", "-rotated180", "-rotated270", "-flipped")
)

#: Seed of the label permutations of ``relabel``: fixed, so the task is the same whatever the run's seed.
RELABEL_SEED = 20261130

#: The characters of the Shakespeare task; anything else maps to the last id (unknown).
VOCAB = " !\"&'(),-.0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz\n"


#: Side of the images as stored (MNIST and Fashion-MNIST: 28 x 28).
SIDE = 28


def _check_side(side: Any) -> int:
    """``side`` validated: an int that divides :data:`SIDE` (the images are averaged over blocks of that size)."""
    divisors = [d for d in range(1, SIDE + 1) if SIDE % d == 0]
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or int(side) not in divisors:
        raise ValueError(f"side: must be an int dividing {SIDE} ({', '.join(map(str, divisors))}); got {side!r}")
    return int(side)


def pool_images(images: np.ndarray, side: int) -> np.ndarray:
    """``images`` (n, H, W) averaged over (H / side) x (W / side) blocks -> (n, side, side) float32.

    Averaging commutes with the domains' transforms (quarter turns, inversion, mirroring), so a pooled domain is the
    domain of the pooled images. ``side`` equal to H returns ``images`` unchanged (the same object).
    """
    n, h, w = images.shape
    if side == h == w:
        return images
    f = h // side
    return images.reshape(n, side, f, side, w // side).mean(axis=(2, 4), dtype=np.float32)


def _images(
    name: str, cache: str | Path | None, side: int = SIDE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = idx_folder(name, cache)
    x = read_idx(folder / "train-images-idx3-ubyte").astype(np.float32) / 255.0
    y = read_idx(folder / "train-labels-idx1-ubyte").astype(np.int64)
    xt = read_idx(folder / "t10k-images-idx3-ubyte").astype(np.float32) / 255.0
    yt = read_idx(folder / "t10k-labels-idx1-ubyte").astype(np.int64)
    return pool_images(x, side), y, pool_images(xt, side), yt


def load_image_dataset(
    name: str,
    n_clients: int,
    *,
    seed: int = 0,
    partition: str = "dirichlet",
    alpha: float = 0.5,
    shards: int = 2,
    test_size: int | None = None,
    side: int = SIDE,
    cache: str | Path | None = None,
) -> FederatedData:
    """MNIST or Fashion-MNIST (``name``) over ``n_clients``; images (1, side, side) in [0, 1].

    ``side`` (a divisor of 28): each image averaged over blocks of 28 / side pixels (:func:`pool_images`), for a
    cheaper model: a 14 x 14 image costs the convolutions a quarter of the work.
    """
    if name not in ("mnist", "fashion"):
        raise ValueError(f"name: must be 'mnist' or 'fashion'; got {name!r}")
    side = _check_side(side)
    x, y, xt, yt = _images(name, cache, side)
    rng = np.random.default_rng(seed)
    parts = _split_clients(x, y, n_clients, partition, alpha, shards, rng)
    if test_size is not None:
        keep = rng.choice(len(yt), size=min(int(test_size), len(yt)), replace=False)
        xt, yt = xt[keep], yt[keep]
    info = dict(dataset=name, partition=partition, alpha=alpha, shards=shards, seed=seed, test_size=len(yt))
    if side != SIDE:  # records of full-size runs keep the info they always had
        info["side"] = side
    return _package(x[:, None], y, xt[:, None], yt, parts, 10, info)


def _transform(images: np.ndarray, domain: str) -> np.ndarray:
    """The domain's variant of ``images`` (..., H, W) in [0, 1]: rotated by 90/180/270 degrees, inverted, mirrored."""
    variant = domain.partition("-")[2]
    turns = {"rotated": 1, "rotated180": 2, "rotated270": 3}
    if variant in turns:
        return np.ascontiguousarray(np.rot90(images, k=turns[variant], axes=(-2, -1)))
    if variant == "inverted":
        return 1.0 - images
    if variant == "flipped":
        return np.ascontiguousarray(images[..., ::-1])
    return images


def load_multidomain(
    n_clients: int,
    *,
    seed: int = 0,
    domains: tuple[str, ...] | list[str] = ("mnist", "mnist-rotated", "fashion", "fashion-inverted"),
    alpha: float = 0.5,
    samples_per_client: int = 300,
    test_per_domain: int = 500,
    relabel: bool = False,
    side: int = SIDE,
    cache: str | Path | None = None,
) -> FederatedData:
    """One domain per client (round-robin), Dirichlet(``alpha``) label skew inside it.

    Each client holds exactly ``samples_per_client`` training images of its domain, drawn
    without replacement from that domain's training split with label shares from a
    Dirichlet(``alpha``) draw of its own; ``client_ids`` are ``<domain>-<k>`` and
    ``info["client_domain"]`` lists each client's domain. ``relabel``: domain ``k >= 1``
    answers ``maps[k][c]`` for an image of class ``c``, where ``maps[k]`` is a permutation of
    the ten labels drawn from :data:`RELABEL_SEED` (``info["label_maps"]``; domain 0 keeps
    the identity). ``side``: the images averaged down to side x side, as :func:`load_image_dataset`'s.
    """
    side = _check_side(side)
    if not isinstance(relabel, bool):
        raise ValueError(f"relabel: must be a bool; got {relabel!r}")
    unknown = sorted(set(domains) - set(DOMAINS))
    if unknown or len(domains) < 1:
        raise ValueError(f"domains: must be names from {', '.join(DOMAINS)}; got {list(domains)}")
    if samples_per_client < 1 or test_per_domain < 1:
        raise ValueError("samples_per_client, test_per_domain: must be >= 1")
    rng = np.random.default_rng(seed)
    bases = {name: _images(name, cache, side) for name in sorted({d.split("-")[0] for d in domains})}
    members = [[i for i in range(n_clients) if i % len(domains) == k] for k in range(len(domains))]
    maps = _label_maps(len(domains), relabel)
    clients: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_clients
    test_x, test_y, client_domain = [], [], [""] * n_clients
    for k, domain in enumerate(domains):
        x, y, xt, yt = bases[domain.split("-")[0]]
        own = members[k]
        unused = [list(rng.permutation(np.flatnonzero(y == c))) for c in range(10)]
        for i in own:
            idx = _label_skewed(unused, samples_per_client, alpha, rng)
            clients[i] = (
                torch.from_numpy(_transform(x[idx], domain)[:, None].copy()),
                torch.from_numpy(maps[k][y[idx]]),
            )
            client_domain[i] = domain
        pick = rng.choice(len(yt), size=min(test_per_domain, len(yt)), replace=False)
        test_x.append(_transform(xt[pick], domain)[:, None])
        test_y.append(maps[k][yt[pick]])
    ids = [f"{client_domain[i]}-{i}" for i in range(n_clients)]
    info = dict(
        dataset="multidomain",
        domains=list(domains),
        alpha=alpha,
        samples_per_client=samples_per_client,
        test_per_domain=test_per_domain,
        seed=seed,
        client_domain=client_domain,
        relabel=relabel,
        label_maps=[m.tolist() for m in maps],
    )
    if side != SIDE:
        info["side"] = side
    test = (torch.from_numpy(np.concatenate(test_x)), torch.from_numpy(np.concatenate(test_y)))
    return FederatedData([c for c in clients if c is not None], test, 10, (1, side, side), ids, info)


def _label_maps(n_domains: int, relabel: bool) -> list[np.ndarray]:
    """Per domain, the label each class is answered with: the identity, or (``relabel``) a fixed permutation."""
    rng = np.random.default_rng(RELABEL_SEED)
    identity = np.arange(10, dtype=np.int64)
    return [identity] + [rng.permutation(10).astype(np.int64) if relabel else identity for _ in range(n_domains - 1)]


def _label_skewed(unused: list[list[int]], size: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """``size`` unused sample indices whose labels follow a Dirichlet(``alpha``) draw (taken from ``unused``).

    A label that runs out is filled from the labels that still have samples.
    """
    counts = rng.multinomial(size, rng.dirichlet(np.full(len(unused), alpha)))
    taken: list[int] = []
    for c, k in enumerate(counts):
        taken += unused[c][:k]
        del unused[c][:k]
    for c in rng.permutation(len(unused)):
        if len(taken) >= size:
            break
        extra = size - len(taken)
        taken += unused[c][:extra]
        del unused[c][:extra]
    if len(taken) < size:
        raise ValueError(f"samples_per_client: the domain has too few training samples for {size} per client")
    return np.sort(np.asarray(taken, dtype=np.int64))


def encode_text(text: str) -> np.ndarray:
    """Token ids of ``text`` in :data:`VOCAB` (unknown characters map to ``len(VOCAB)``)."""
    table = {ch: i for i, ch in enumerate(VOCAB)}
    return np.fromiter((table.get(ch, len(VOCAB)) for ch in text), dtype=np.int64, count=len(text))


def load_shakespeare(
    n_clients: int,
    *,
    seed: int = 0,
    seq_len: int = 80,
    min_chars: int = 2000,
    max_samples: int = 400,
    test_frac: float = 0.1,
    scripts: int = 1,
    cache: str | Path | None = None,
) -> FederatedData:
    """Next-character prediction, one client per (play, speaker) with at least ``min_chars`` characters.

    ``n_clients`` speakers are drawn (seeded) from the eligible ones; each client keeps at
    most ``max_samples`` training windows (evenly spaced over its text) and its last
    ``test_frac`` of windows, at most ``max_samples // 4``, go to the test set. Inputs are
    (seq_len,) int64 token ids; ``n_classes`` is ``scripts * len(VOCAB) + 1`` (the last id:
    any character outside :data:`VOCAB`, in every script).

    ``scripts``: the i-th chosen speaker (sorted by play and name) writes in script
    ``i % scripts``, whose ids are those of :data:`VOCAB` shifted by ``script * len(VOCAB)``:
    inputs and labels of different scripts share no id, so the next character's id depends
    on the client's script. ``info["client_domain"]`` names each client's script.
    """
    if isinstance(scripts, bool) or not isinstance(scripts, int) or scripts < 1:
        raise ValueError(f"scripts: must be an integer >= 1; got {scripts!r}")
    doc = json.loads(shakespeare_file(cache).read_text())
    speakers = {key: text for key, text in doc["speakers"].items() if len(text) >= max(min_chars, seq_len + 2)}
    if len(speakers) < n_clients:
        raise ValueError(
            f"n_clients: only {len(speakers)} (play, speaker) pairs have at least {min_chars} characters; "
            f"got {n_clients}"
        )
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac: must lie in (0, 1); got {test_frac}")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(sorted(speakers), size=n_clients, replace=False).tolist())
    clients, tx, ty = [], [], []
    unknown = len(VOCAB)
    for i, key in enumerate(chosen):
        tokens = encode_text(speakers[key])
        # shift the known characters into the client's script; the unknown id stays shared (and last)
        script = i % scripts
        tokens = np.where(tokens == unknown, scripts * unknown, tokens + script * unknown)
        starts = np.arange(len(tokens) - seq_len)
        cut = int(len(starts) * (1 - test_frac))
        train, test = starts[:cut], starts[cut:]
        train = train[np.linspace(0, len(train) - 1, min(len(train), max_samples)).astype(np.int64)]
        test = test[np.linspace(0, len(test) - 1, min(len(test), max(1, max_samples // 4))).astype(np.int64)]
        windows = np.lib.stride_tricks.sliding_window_view(tokens, seq_len + 1)
        clients.append((torch.from_numpy(windows[train, :-1].copy()), torch.from_numpy(windows[train, -1].copy())))
        tx.append(windows[test, :-1])
        ty.append(windows[test, -1])
    info: dict[str, Any] = dict(
        dataset="shakespeare", seq_len=seq_len, min_chars=min_chars, max_samples=max_samples, seed=seed
    )
    if scripts > 1:
        info |= dict(scripts=scripts, client_domain=[f"script{i % scripts}" for i in range(n_clients)])
    test_set = (torch.from_numpy(np.concatenate(tx)), torch.from_numpy(np.concatenate(ty)))
    return FederatedData(clients, test_set, scripts * unknown + 1, (seq_len,), chosen, info | {"tokens": True})
