"""Regenerate the regression instances and their optima in this folder.

    python datasets/instances/make_instances.py

Each instance comes from :func:`alignsolve.generate` with the arguments stored in
``manifest.json``; its optimum is solved by the ``flow`` method and, for the
instances without a load penalty, cross-checked against ``scipy.optimize.milp`` (the test suite's oracle,
:func:`alignsolve.testing.milp_optimum`).
"""

from __future__ import annotations

import json
from pathlib import Path

import alignsolve as als
from alignsolve.testing import milp_optimum

HERE = Path(__file__).resolve().parent

SPECS = [
    dict(name="uniform_30x6_k2", family="uniform", n_clients=30, n_experts=6, capacity=2, seed=1),
    dict(
        name="uniform_lower_30x6_k2",
        family="uniform",
        n_clients=30,
        n_experts=6,
        capacity=2,
        seed=2,
        expert_min_frac=0.5,
    ),
    dict(name="skewed_40x8_k2", family="skewed", n_clients=40, n_experts=8, capacity=2, seed=3),
    dict(
        name="skewed_lower_40x8_k3", family="skewed", n_clients=40, n_experts=8, capacity=3, seed=4, expert_min_frac=0.5
    ),
    dict(name="lowrank_40x8_k2", family="lowrank", n_clients=40, n_experts=8, capacity=2, seed=5),
    dict(name="tight_24x6_k2", family="tight", n_clients=24, n_experts=6, capacity=2, seed=6),
    dict(name="adversarial_24x8_k2", family="adversarial", n_clients=24, n_experts=8, capacity=2, seed=0),
    dict(name="infeasible_30x6_k2", family="infeasible", n_clients=30, n_experts=6, capacity=2, seed=7),
    dict(name="penalty_30x6_k2", family="uniform", n_clients=30, n_experts=6, capacity=2, seed=8, load_penalty=0.05),
]


def build(spec: dict) -> als.Problem:
    args = {k: v for k, v in spec.items() if k != "name"}
    return als.generate(args.pop("family"), args.pop("n_clients"), args.pop("n_experts"), args.pop("capacity"), **args)


def main() -> None:
    manifest = {"command": "python datasets/instances/make_instances.py", "instances": []}
    for spec in SPECS:
        problem = build(spec)
        path = HERE / f"{spec['name']}.json"
        problem.save(path)
        result = als.solve(problem, "flow")
        optimum = result.objective if result.has_solution else None
        if problem.load_penalty == 0:
            check = milp_optimum(problem)
            if (check is None) != (optimum is None) or (check is not None and abs(check - optimum) > 1e-7):
                raise SystemExit(f"{spec['name']}: flow {optimum} disagrees with milp {check}")
        manifest["instances"].append(
            {"file": path.name, "generator": spec, "status": result.status, "optimum": optimum}
        )
        print(f"{spec['name']:<24} {result.status:<10} {optimum}")
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
