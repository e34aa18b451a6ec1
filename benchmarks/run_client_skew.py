"""How far each task's clients differ from one another in what they hold: what an assignment has to align.

Client-expert alignment pays when clients' data differ in what the router does with them; when every
client holds the same mix, any expert serves any client about as well, whichever the assignment. For
each task of :mod:`fedloop.tasks` (its partition on seed 0, no training), this measures the mean over
clients of the total-variation distance between a client's distribution and the pooled one,

    TV_i = 1/2 * sum_v | p_i(v) - p(v) |,

in [0, 1] (0: the client holds the pooled mix; near 1: what it holds is rare elsewhere), of

* its labels (the next character on ``shakespeare``);
* on ``shakespeare``, the last input character, which is all that a router with ``router_input="token"``
  reads, so its routing distribution is a function of this one;
* on ``multidomain``, its domain;
* on ``shakespeare``, also the characters of each play (one client per play, each cut to the shortest play's
  length): the coarser partition by play, measured before any run is spent on it.

With a few hundred samples a client's empirical distribution differs from the pooled one by sampling
alone, and more so over many values (about 100 characters) than over few (10 labels). The ``same-size
draw`` column gives that floor: the mean TV of clients of the same sizes drawn at random from the
pooled samples.

    python benchmarks/run_client_skew.py      # writes benchmarks/results/client_skew.md

Needs the real data: ``fedloop fetch all``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import fedloop
from fedloop import tasks
from fedloop.fetch import shakespeare_file
from fedloop.loop import load_data
from fedloop.real_data import encode_text

RESULTS = Path(__file__).resolve().parent / "results"


def mean_tv(keys: list[np.ndarray], n_values: int) -> float:
    """Mean over clients of TV(client's distribution of ``keys``, the pooled distribution); (n_i,) ints each."""
    counts = np.stack([np.bincount(k, minlength=n_values) for k in keys]).astype(float)
    pooled = counts.sum(axis=0) / counts.sum()
    shares = counts / counts.sum(axis=1, keepdims=True)
    return float(np.mean(0.5 * np.abs(shares - pooled).sum(axis=1)))


def random_split_tv(keys: list[np.ndarray], n_values: int, seed: int = 0) -> float:
    """The same statistic for clients of the same sizes dealt at random from the pooled keys (sampling floor)."""
    pooled = np.concatenate(keys)
    order = np.random.default_rng(seed).permutation(len(pooled))
    cuts = np.cumsum([len(k) for k in keys])[:-1]
    return mean_tv(np.split(pooled[order], cuts), n_values)


def by_play(speakers: dict[str, str]) -> list[np.ndarray]:
    """Token ids of each play's text, every play cut to the shortest one's length; ``speakers`` maps
    ``"play|SPEAKER"`` to that speaker's text (the fetched document's ``speakers``)."""
    texts: dict[str, list[str]] = {}
    for key, text in sorted(speakers.items()):
        texts.setdefault(key.split("|")[0], []).append(text)
    tokens = [encode_text("".join(parts)) for parts in texts.values()]
    size = min(len(t) for t in tokens)
    return [t[:size] for t in tokens]


def measure(task: str) -> list[tuple[str, str, int, float, float]]:
    """Rows (task, what, clients, mean TV, same-size random draw) for ``task`` on seed 0."""
    cfg = fedloop.FedConfig(**(tasks.federation(task) | {"seed": 0}))
    cfg.validate()
    data = load_data(cfg)
    n = len(data.clients)
    labels = [y.numpy() for _, y in data.clients]
    rows = [(task, "label", n, mean_tv(labels, data.n_classes), random_split_tv(labels, data.n_classes))]
    if data.info.get("tokens"):
        last = [x[:, -1].numpy() for x, _ in data.clients]
        rows.append((task, "last character", n, mean_tv(last, data.n_classes), random_split_tv(last, data.n_classes)))
    if task == "shakespeare":
        plays = by_play(json.loads(shakespeare_file(cfg.data_dir).read_text())["speakers"])
        rows.append(
            (
                task,
                "character, by play",
                len(plays),
                mean_tv(plays, data.n_classes),
                random_split_tv(plays, data.n_classes),
            )
        )
    if "client_domain" in data.info:
        names = sorted(set(data.info["client_domain"]))
        domains = [np.full(len(y), names.index(d), dtype=np.int64) for d, y in zip(data.info["client_domain"], labels)]
        rows.append((task, "domain", n, mean_tv(domains, len(names)), random_split_tv(domains, len(names))))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(tasks.TASKS), help="comma-separated tasks of fedloop.tasks")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    chosen = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(chosen) - set(tasks.TASKS))
    if unknown or not chosen:
        parser.error(f"--tasks: must name some of {', '.join(tasks.TASKS)}; got {args.tasks!r}")
    command = " ".join(["python benchmarks/run_client_skew.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [
        f"# Client skew ({datetime.now(timezone.utc):%Y-%m-%d}, `{command}`)",
        "",
        "Mean over clients of the total-variation distance between a client's distribution and the pooled one "
        "(0: every client holds the pooled mix; near 1: what a client holds is rare elsewhere), on seed 0's "
        "partition; the same-size draw deals the pooled samples to clients of the same sizes at random "
        "(what sampling alone gives).",
        "",
        "| task | of | clients | mean TV | same-size draw |",
        "|---|---|---|---|---|",
    ]
    for task in chosen:
        for name, what, n, tv, floor in measure(task):
            lines.append(f"| {name} | {what} | {n} | {tv:.3f} | {floor:.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "client_skew.md"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
