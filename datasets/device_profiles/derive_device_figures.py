"""Re-derive ``device_figures.json`` from the real device traces.

    python datasets/device_profiles/derive_device_figures.py [TRACES_DIR]

``TRACES_DIR`` defaults to ``../shared/data/device-traces`` next to the repository. It
must hold ``ai_benchmark_devices.json`` (333 Android phones from the AI-Benchmark
ranking) and ``network_speed_distribution.json`` (19 measured network profiles), both
from the FLASH benchmark (github.com/PKU-Chengxu/FLASH, commit 55cbede0, BSD-2-Clause).

The traces are not copied into the project: only figures derived from them are written
(quantile tables and rank correlations), which is all
:func:`alignsolve.federated.capacity.sample_profiles` needs:

- ``compute``: quantiles of the phones' CPU floating-point AI score (``CPU_F_AI_Score``,
  the benchmark's measure of float inference on the CPU, which is where on-device
  training runs) divided by its median, so that the absolute scale is a stated
  assumption of the generator and not hidden in the table;
- ``ram_gb``: quantiles of the phones' RAM;
- ``compute_ram_spearman``: their rank correlation (newer phones have both);
- ``downlink_kbps`` / ``uplink_kbps``: quantiles of the equal-weight mixture of the 19
  network profiles, each a normal law with its measured mean and standard deviation,
  truncated below at 5% of its mean (a negative throughput is meaningless), computed
  by Monte Carlo with a fixed seed; ``down_up_spearman``: their rank correlation.

Running it again on the same traces writes the same file (the test suite checks that
when the traces are present).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent
DEFAULT_TRACES = HERE.parents[2] / "shared" / "data" / "device-traces"
OUTPUT = HERE / "device_figures.json"
LEVELS = np.round(np.linspace(0.0, 1.0, 51), 4)
MONTE_CARLO_DRAWS = 200_000
TRUNCATE_AT = 0.05


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ram_gb(text: str) -> float:
    text = text.strip().upper()
    if text.endswith("GB"):
        return float(text[:-2])
    if text.endswith("MB"):
        return float(text[:-2]) / 1024.0
    raise ValueError(f"unrecognised RAM field {text!r}")


def _quantiles(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(values, LEVELS)]


def derive(traces: Path) -> dict:
    """The figures, as a JSON-ready dict."""
    devices_path = traces / "ai_benchmark_devices.json"
    network_path = traces / "network_speed_distribution.json"
    devices = json.loads(devices_path.read_text())
    network = json.loads(network_path.read_text())

    score = np.array([float(d["CPU_F_AI_Score"]) for d in devices])
    ram = np.array([_ram_gb(d["RAM"]) for d in devices])
    median = float(np.median(score))
    rho_compute_ram = float(stats.spearmanr(score, ram).statistic)

    # The network profiles are (mean, sd) pairs: sample their equal-weight mixture.
    rng = np.random.default_rng(20261121)
    keys = sorted(network)
    which = rng.integers(0, len(keys), size=MONTE_CARLO_DRAWS)
    down_mu = np.array([network[k]["down_u"] for k in keys])[which]
    down_sd = np.array([network[k]["down_sigma"] for k in keys])[which]
    up_mu = np.array([network[k]["up_u"] for k in keys])[which]
    up_sd = np.array([network[k]["up_sigma"] for k in keys])[which]
    # One standard normal per draw for each direction, correlated only through the profile.
    down = np.maximum(down_mu + down_sd * rng.standard_normal(MONTE_CARLO_DRAWS), TRUNCATE_AT * down_mu)
    up = np.maximum(up_mu + up_sd * rng.standard_normal(MONTE_CARLO_DRAWS), TRUNCATE_AT * up_mu)
    rho_down_up = float(stats.spearmanr(down, up).statistic)

    return {
        "format": "alignsolve.device_figures",
        "version": 1,
        "provenance": {
            "source": "FLASH heterogeneity-aware FL benchmark, github.com/PKU-Chengxu/FLASH "
            "commit 55cbede0131877b583ed55333e980985a1925afd (BSD-2-Clause)",
            "files": {
                "ai_benchmark_devices.json": {
                    "origin": "models/utils/device_util/raw_ai_benchmark_list.json",
                    "sha256": _sha256(devices_path),
                    "records": len(devices),
                },
                "network_speed_distribution.json": {
                    "origin": "models/speed_distri.json",
                    "sha256": _sha256(network_path),
                    "records": len(network),
                },
            },
            "script": "datasets/device_profiles/derive_device_figures.py",
            "monte_carlo": {"draws": MONTE_CARLO_DRAWS, "seed": 20261121, "truncate_at_fraction_of_mean": TRUNCATE_AT},
        },
        "levels": [float(v) for v in LEVELS],
        "compute": {
            "field": "CPU_F_AI_Score",
            "median_score": median,
            "relative_to_median": _quantiles(score / median),
        },
        "ram_gb": _quantiles(ram),
        "compute_ram_spearman": round(rho_compute_ram, 6),
        "downlink_kbps": _quantiles(down),
        "uplink_kbps": _quantiles(up),
        "down_up_spearman": round(rho_down_up, 6),
    }


def main(argv: list[str]) -> int:
    traces = Path(argv[1]) if len(argv) > 1 else DEFAULT_TRACES
    if not (traces / "ai_benchmark_devices.json").is_file():
        print(f"traces not found in {traces}; nothing written", file=sys.stderr)
        return 1
    figures = derive(traces)
    OUTPUT.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
