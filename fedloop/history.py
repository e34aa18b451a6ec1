"""A run's history: one record per round, saved as JSON and CSV, available as a pandas DataFrame."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["WALL_CLOCK_FIELDS", "History", "RoundRecord"]

#: Fields measured with the wall clock: the only ones that differ between two runs with the same seed.
WALL_CLOCK_FIELDS = ("solver_s", "train_s", "aggregate_s", "report_s", "evaluate_s")


@dataclass
class RoundRecord:
    """What happened in one round.

    ``bytes_down``/``bytes_up`` are exact tensor sizes; ``latency_s`` is the simulated round
    time (the slowest client that returned: download + compute + upload from its profile);
    ``loads`` are clients per expert among those assigned; ``trained`` are the clients whose
    updates were aggregated, ``dropped`` lost their update (availability, deadline),
    ``rejected`` sent one the server refused (with the reason); ``routing_entropy`` is the
    entropy of the global router's top-1 expert use on the test set over ``log E`` (1: even
    over all experts, 0: one expert; NaN in histories written before it was recorded).
    ``assigned`` maps each sampled client given experts to them (whether or not its update
    arrived); ``routed_share`` is the mean, over those clients, of the share of their routing
    (their top-k picks under the global router) that falls on their assigned experts: 1 when
    every client trains the experts the router sends its data to, ``m/E`` on average for ``m``
    experts drawn at random (NaN when nobody was assigned, or in histories written before it
    was recorded). The routing is the one the clients reported, as the server saw it on a
    distributed run too; a private report's negative (noised) entries are clipped to 0 and the
    rest renormalised (``fedloop.loop.routed_share``), so the share stays in [0, 1] but then
    measures the noised report, not the client's data.

    The wall-clock fields: ``solver_s`` the policy's ``assign``, ``train_s`` the clients'
    local training, ``aggregate_s`` screening and averaging, ``report_s`` the sampled
    clients' routing statistics for their reports when the server's process computes them
    (0 when the clients sent them, as on Flower), ``evaluate_s`` the test evaluation of the
    new global model (NaN, both, in histories written before they were recorded).
    """

    round: int
    accuracy: float
    test_loss: float
    train_loss: float
    bytes_down: int
    bytes_up: int
    latency_s: float
    solver_s: float
    train_s: float
    aggregate_s: float
    participants: int
    completed: int
    loads: list[int]
    load_cv: float
    load_gini: float
    trained: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    relaxed: list[str] = field(default_factory=list)
    routing_entropy: float = math.nan
    assigned: dict[str, list[int]] = field(default_factory=dict)
    routed_share: float = math.nan
    report_s: float = math.nan
    evaluate_s: float = math.nan


@dataclass
class History:
    """Records keyed by round, plus the run's configuration."""

    config: dict[str, Any] = field(default_factory=dict)
    records: dict[int, RoundRecord] = field(default_factory=dict)

    def add(self, record: RoundRecord) -> None:
        self.records[record.round] = record

    @property
    def rounds(self) -> list[int]:
        return sorted(self.records)

    def column(self, name: str) -> list[Any]:
        return [getattr(self.records[r], name) for r in self.rounds]

    def rounds_to(self, target: float) -> int | None:
        """The first round (1-based count) whose accuracy reaches ``target``; None if never."""
        for k, r in enumerate(self.rounds, start=1):
            if self.records[r].accuracy >= target:
                return k
        return None

    def cumulative(self, name: str) -> list[float]:
        total, out = 0.0, []
        for value in self.column(name):
            total += value
            out.append(total)
        return out

    def to_target(self, target: float) -> dict[str, float]:
        """Rounds, bytes (down + up) and simulated seconds until ``target`` accuracy (``nan`` if never)."""
        k = self.rounds_to(target)
        if k is None:
            return {"rounds": math.nan, "bytes": math.nan, "seconds": math.nan}
        traffic = [d + u for d, u in zip(self.column("bytes_down"), self.column("bytes_up"))]
        return {
            "rounds": float(k),
            "bytes": float(sum(traffic[:k])),
            "seconds": float(sum(self.column("latency_s")[:k])),
        }

    # -- files -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "records": [asdict(self.records[r]) for r in self.rounds]}

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> History:
        doc = json.loads(text)
        h = cls(config=dict(doc.get("config", {})))
        for rec in doc.get("records", []):
            h.add(RoundRecord(**rec))
        return h

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write ``history.json`` and ``history.csv`` in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        js, cs = folder / "history.json", folder / "history.csv"
        tmp = js.with_suffix(".json.tmp")
        tmp.write_text(self.to_json(indent=1))
        tmp.replace(js)
        names = [f.name for f in fields(RoundRecord)]
        with open(cs, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(names)
            for r in self.rounds:
                row = asdict(self.records[r])
                writer.writerow([json.dumps(row[n]) if isinstance(row[n], (list, dict)) else row[n] for n in names])
        return js, cs

    def to_frame(self):  # -> pandas.DataFrame
        """The records as a DataFrame indexed by round (needs pandas: ``pip install alignsolve[fed]``)."""
        import pandas as pd

        return pd.DataFrame([asdict(self.records[r]) for r in self.rounds]).set_index("round")

    def deterministic(self) -> list[dict[str, Any]]:
        """The records without their wall-clock fields: equal for equal seeds."""
        out = []
        for r in self.rounds:
            row = asdict(self.records[r])
            for name in WALL_CLOCK_FIELDS:
                row.pop(name)
            out.append(row)
        return out
