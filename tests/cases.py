"""Small cases with known optima, shared by every method's tests.

Each case: a name, the problem's keyword arguments and the optimum (None: infeasible).
The optima were worked out by hand (the comment says how) and are re-checked by brute force.
"""

from __future__ import annotations

from typing import Any

import alignsolve as als

CASES: list[tuple[str, dict[str, Any], float | None]] = [
    # c0->e0 (3) + c1->e1 (2.5) beats c0->e1 + c1->e0 (3).
    ("two_by_two", dict(fitness=[[3.0, 1.0], [2.0, 2.5]], client_capacity=1, expert_max=1), 5.5),
    # Greedy's trap: taking 1.01 first forces the 0 pair; the optimum crosses (1 + 1).
    ("greedy_trap", dict(fitness=[[1.01, 1.0], [1.0, 0.0]], client_capacity=1, expert_max=1), 2.0),
    # Negative fitness and no lower bound: assign nothing.
    ("all_negative", dict(fitness=[[-1.0, -2.0]], client_capacity=2), 0.0),
    # expert_min forces one client onto expert 0: c0 (-1) is cheaper than c1 (-3), and c1 keeps 5.
    ("expert_min_forces", dict(fitness=[[-1.0, -2.0], [-3.0, 5.0]], client_capacity=1, expert_min=[1, 0]), 4.0),
    # client_min forces the least bad expert.
    ("client_min_forces", dict(fitness=[[-1.0, -2.0]], client_capacity=2, client_min=1), -1.0),
    # Quadratic load penalty 1.5: one client (3 - 1.5) beats two (6 - 6) and none (0).
    ("load_penalty", dict(fitness=[[3.0], [3.0]], client_capacity=1, load_penalty=1.5), 1.5),
    # The mask keeps c1 off expert 0: c0->e0 (5) + c1->e1 (1).
    (
        "mask",
        dict(
            fitness=[[5.0, 1.0], [5.0, 1.0]],
            client_capacity=1,
            expert_max=[1, 2],
            allowed=[[True, True], [False, True]],
        ),
        6.0,
    ),
    # A client of capacity 0 takes nothing: c1->e1 (2).
    ("zero_capacity", dict(fitness=[[9.0, 9.0], [1.0, 2.0]], client_capacity=[0, 1], expert_max=1), 2.0),
    # A permutation of a rank-one matrix: sorted pairing, 1 + 4 + 9 (rearrangement inequality).
    (
        "assignment",
        dict(fitness=[[1, 2, 3], [2, 4, 6], [3, 6, 9]], client_capacity=1, client_min=1, expert_min=1, expert_max=1),
        14.0,
    ),
    # Each client takes both experts (capacity 2) unless expert_max stops it: 2 slots per expert.
    ("b_matching", dict(fitness=[[4, 3], [4, 1], [4, 2]], client_capacity=2, expert_max=2), 4 + 4 + 3 + 2),
    # One client cannot give expert 0 its minimum of 2.
    ("infeasible_expert_min", dict(fitness=[[1.0, 1.0]], client_capacity=2, expert_min=[2, 0], expert_max=5), None),
    # Two clients must each train an expert, but both may only train expert 0, which takes one.
    (
        "infeasible_hall",
        dict(
            fitness=[[1.0, 1.0], [1.0, 1.0]],
            client_capacity=1,
            client_min=1,
            expert_max=[1, 1],
            allowed=[[True, False], [True, False]],
        ),
        None,
    ),
    # Generalised: budget 4 buys expert 1 and 2 (5 + 4, cost 4) but not expert 0 (6, cost 3) with another one.
    (
        "budget_knapsack",
        dict(fitness=[[6.0, 5.0, 4.0]], client_capacity=3, cost=[[3.0, 2.0, 2.0]], budget=4.0),
        9.0,
    ),
    # Generalised: c0 affords one expert (e0, 5); c1 both (4 + 3) and gives expert 1 its minimum.
    (
        "budget_expert_min",
        dict(
            fitness=[[5.0, 1.0], [4.0, 3.0]],
            client_capacity=2,
            expert_min=[0, 1],
            cost=[[2.0, 2.0], [2.0, 2.0]],
            budget=[2.0, 4.0],
        ),
        12.0,
    ),
    # Generalised: the client must train two experts but its budget pays for one.
    (
        "budget_infeasible",
        dict(fitness=[[1.0, 1.0]], client_capacity=2, client_min=2, cost=[[3.0, 3.0]], budget=5.0),
        None,
    ),
]


def build(kwargs: dict[str, Any]) -> als.Problem:
    kw = dict(kwargs)
    if "allowed" in kw:
        import numpy as np

        kw["allowed"] = np.asarray(kw["allowed"], dtype=bool)
    fitness = kw.pop("fitness")
    capacity = kw.pop("client_capacity")
    return als.Problem(fitness, capacity, **kw)
