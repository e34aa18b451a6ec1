"""The policy comparison on real data (issue 18): rounds to target with censoring, paired seeds, intervals.

    python benchmarks/run_federated.py --task multidomain             # runs what is missing, then renders
    python benchmarks/run_federated.py --task multidomain --render    # tables and plots from the saved runs
    python benchmarks/run_federated.py --task smoke --quick           # a minute: synthetic data, CI-sized

Every policy sees the same partition, participation, profiles and initialisation on a
seed (the seed fixes them all), so policies are compared per seed. Each run's history is
saved as JSON under ``benchmarks/results/federated/<task>-<version>/`` as soon as it ends; a
rerun skips the runs already there (one task per process: run two tasks on two cores).
Where clients hold domains, ``domains.json`` beside the runs names each seed's client domains,
which the traces' domain purity reads.

Targets are 70%, 80% and 90% of the *central accuracy*: the testbed's MoE trained
centrally on the pooled training data (computed once per task and seed 0, saved with the
runs). A run that misses a target is censored at the round budget, never dropped: the
tables show n reached / n, the Kaplan-Meier median, the restricted mean of rounds to
target, and the relative reduction of ``aligned`` against each baseline with a paired
bootstrap 95% interval (``fedloop.stats``). Policies may have run different numbers of
seeds (more seeds added for some): each row of the first table covers its policy's seeds,
and each comparison pairs the seeds both policies ran (its ``n`` column). Also: area under the accuracy curve, final
accuracy (mean of the last 10 rounds), MB and simulated seconds to the 80% target (over
the runs that reach it), load CV, dead experts (never trained in the last 10 rounds), routing
entropy (the global router's top-1 use of the experts on the test set, entropy over log E,
mean of the last 10 rounds; "-" for runs saved before it was recorded). Figures: the accuracy curves
(``federated_<task>.png``), the assignment traces (``_traces.png``) and ``aligned_value``'s paired intervals
against every policy (``_pairs.png``).

The sanity gates (``benchmarks/run_gates.py``) must pass on a task before its results
say anything about policies; the report repeats where they stand.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np

import fedloop
from fedloop import plots, stats, tasks
from fedloop.tasks import parse_shard

RESULTS = Path(__file__).resolve().parent / "results"
#: Environment variables that change a training run's floating-point arithmetic on one processor (the thread count,
#: and the instruction set torch's kernels, MKL and oneDNN may use), so that a saved run reproduces only under the
#: values it ran with (``docs/benchmarks.md``, "Which build a run is in").
BUILD_VARIABLES = (
    "OMP_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
)
#: The aligner of issue 19: value term on, load bounds following the routing's demand, no forced cohort, no
#: staleness push towards experts the router does not use (``fedloop.FedConfig`` overrides).
VALUE = {"policy": "aligned", "load_target": "demand", "min_cohort": 0}
VALUE |= {"score_weights": {"value": 1.0, "staleness": 0.0}}
#: aligned_value under uniform bounds with the deficit queue as its load term (``aligned_value_uniform_queue``)
UNIFORM_QUEUE = VALUE | {"load_target": "uniform", "load_signal": "queue"}
#: it with its loss share, capability and switching terms at 0: scores of the FLEX-MoE-style policy's form
NOEXTRAS = UNIFORM_QUEUE | {
    "score_weights": UNIFORM_QUEUE["score_weights"] | {"loss": 0.0, "capability": 0.0, "switching": 0.0}
}
#: Named variants: FedConfig overrides on top of the task's federation. A policy not listed runs as itself.
VARIANTS: dict[str, dict] = {
    "aligned_greedy": {"policy": "aligned", "method": "greedy"},
    # one expert that every client trains: FedAvg of a dense model of the same per-sample compute
    "dense": {"policy": "round_robin", "n_experts": 1, "max_experts": 1},
    "aligned_value": VALUE,
    # the FLEX-MoE-style policy without its historical deficit: only its scores and load bounds remain
    "flex_moe_nodeficit": {"policy": "flex_moe", "deficit_weight": 0.0},
    # the FLEX-MoE-style policy with ties among optima at random (its pairs of no routed share score the same deficit
    # bonus for every client): a second draw of it, as aligned_value_shuffle is of aligned_value, so that the aligners
    # are compared with two draws of it and not one
    "flex_moe_shuffle": {"policy": "flex_moe", "tie_break": "shuffle"},
    "aligned_value_greedy": VALUE | {"method": "greedy"},
    # The same scores without the global constraint: uncapped and without a cohort the problem separates per
    # client, and its optimum is each client's best experts by score (per-client top-k of the aligner's scores).
    "aligned_value_topk": VALUE | {"balance_tolerance": 1e6},
    # ablations of aligned_value, one piece each
    "aligned_value_uniform": VALUE | {"load_target": "uniform"},
    # uniform bounds as the FLEX-MoE-style policy's, and without the load term, whose adaptive weight (up to 5x
    # 0.5) can outweigh a client's affinity for its experts: the bounds alone keep the loads even
    "aligned_value_uniform_noload": VALUE
    | {"load_target": "uniform", "score_weights": VALUE["score_weights"] | {"load": 0.0}},
    # between the two: a load term a fifth as strong, so at most 0.5 with its adaptive boost, the size of the
    # FLEX-MoE-style policy's deficit bonus
    "aligned_value_uniform_mildload": VALUE
    | {"load_target": "uniform", "score_weights": VALUE["score_weights"] | {"load": 0.1}},
    # uniform bounds and the load term reading a historical deficit queue, as the FLEX-MoE-style policy's (at most
    # 0.5): the two then differ in their scores and in the aligner's other terms only
    "aligned_value_uniform_queue": UNIFORM_QUEUE,
    # its scoring terms one at a time, to find what keeps it slower than the FLEX-MoE-style policy early: value,
    # loss share, capability and switching are what its scores have and that policy's have not
    **{
        f"aligned_value_uniform_queue_no{term}": UNIFORM_QUEUE
        | {"score_weights": UNIFORM_QUEUE["score_weights"] | {term: 0.0}}
        for term in ("value", "loss", "capability", "switching")
    },
    # the three at once, leaving the scores of the FLEX-MoE-style policy's form (affinity, loss-weighted affinity,
    # deficit queue): what is left between the two is how the loss-weighted affinity is scaled (taken up below)
    "aligned_value_uniform_queue_noextras": NOEXTRAS,
    # one expert per client for sure, a second only when its pair's score beats a price of 0.25 (the weight the
    # score already gives a download): a client whose data one expert covers trains that expert alone, as under the
    # FedMoE-style policy's coverage rule, while the deficit queue still raises the experts its data hardly reach
    "aligned_value_uniform_queue_sparse": UNIFORM_QUEUE
    | {"min_slots": 1, "score_weights": UNIFORM_QUEUE["score_weights"] | {"price": 0.25}},
    # the value term divided by the mean reported loss instead of the round's largest routed loss, the scale of the
    # FLEX-MoE-style policy's loss term (``value_scale="mean_loss"``): first on the three-term ablation above, whose
    # scores are then those of that policy's form and scale (its mean over the clients the aligner can assign, that
    # policy's over every sampled client), then on the deficit-queue aligner and on aligned_value
    "aligned_value_uniform_queue_meanloss_noextras": NOEXTRAS | {"value_scale": "mean_loss"},
    # the same scores with no slot required (min_slots 0, price 0): a pair is taken only where it scores above 0, as
    # the FLEX-MoE-style policy's problem (no lower bounds) does; the aligner otherwise fills every client's slots,
    # with pairs of no routed share and no deficit too. Defined after the first two seeds of the run above had been
    # seen (their first round's assignment differed from that policy's in exactly this)
    "aligned_value_uniform_queue_meanloss_noextras_minslots0": NOEXTRAS | {"value_scale": "mean_loss", "min_slots": 0},
    "aligned_value_uniform_queue_meanloss": UNIFORM_QUEUE | {"value_scale": "mean_loss"},
    "aligned_value_meanloss": VALUE | {"value_scale": "mean_loss"},
    # aligned_value with the deficit queue as its load term, its own demand-following bounds kept
    "aligned_value_queue": VALUE | {"load_signal": "queue"},
    # and at the FLEX-MoE-style policy's loss scale: the deficit queue and the mean-loss scale of the aligner that
    # met two parts on mnist_shards over 300 rounds, under the demand-following bounds that paid on four domains
    "aligned_value_queue_meanloss": VALUE | {"load_signal": "queue", "value_scale": "mean_loss"},
    "aligned_value_novalue": VALUE | {"score_weights": {"value": 0.0, "staleness": 0.0}},
    "aligned_value_noprofiling": VALUE | {"capacity_profiling": False},
    # one scoring term each: its weight set to 0 (staleness, 0 in aligned_value, is put back at the library's 0.25)
    **{
        f"aligned_value_no{term}": VALUE | {"score_weights": VALUE["score_weights"] | {term: 0.0}}
        for term in ("affinity", "loss", "capability", "load", "switching")
    },
    "aligned_value_staleness": VALUE | {"score_weights": VALUE["score_weights"] | {"staleness": 0.25}},
    # the per-pair optimistic bonus 1/sqrt(1 + n_ij) (n_ij: how often client i trained expert j, halving every 20
    # rounds, about two visits of a client sampled at 10%) at the loss term's default weight, 0.5, fixed before its
    # first run and not tuned: a client is moved towards the routed experts it has trained least
    "aligned_value_explore": VALUE | {"score_weights": VALUE["score_weights"] | {"explore": 0.5}},
    # fixed with it, run after it: the same bonus at twice the weight (does a stronger push help or hurt?), and on
    # the deficit-queue aligner, the variant that ties the FLEX-MoE-style policy in final accuracy on mnist_shards
    "aligned_value_explore_heavy": VALUE | {"score_weights": VALUE["score_weights"] | {"explore": 1.0}},
    "aligned_value_uniform_queue_explore": UNIFORM_QUEUE
    | {"score_weights": UNIFORM_QUEUE["score_weights"] | {"explore": 0.5}},
    # the same scores and bounds with ties among optima broken at random (an order of clients and experts drawn
    # per round) instead of by the flow solver's arc order: a second draw of aligned_value, to see how far which
    # tied optimum is returned moves a run (the capability placebo changes nothing else)
    "aligned_value_shuffle": VALUE | {"tie_break": "shuffle"},
    # the capability placebo again with ties at random: against aligned_value_shuffle, a second look at what a
    # row-constant shift of the scores does when it cannot change how ties fall
    "aligned_value_shuffle_nocapability": VALUE
    | {"tie_break": "shuffle", "score_weights": VALUE["score_weights"] | {"capability": 0.0}},
    # the aligner that ties the FLEX-MoE-style policy in final accuracy, with ties at random
    "aligned_value_uniform_queue_shuffle": UNIFORM_QUEUE | {"tie_break": "shuffle"},
    # and its twin at the FLEX-MoE-style policy's scale, the highest final accuracy on mnist_shards, with ties at
    # random: a second draw of it against the second draw of that policy (flex_moe_shuffle)
    "aligned_value_uniform_queue_meanloss_shuffle": UNIFORM_QUEUE
    | {"value_scale": "mean_loss", "tie_break": "shuffle"},
    # the reports it scores privatised on the clients: (1, 1e-5)-DP per round (GaussianMechanism), and at a budget
    # eight times looser, (8, 1e-5), with less noise, to see how the cost follows the budget
    "aligned_value_private": VALUE | {"report_epsilon": 1.0},
    "aligned_value_private_eps8": VALUE | {"report_epsilon": 8.0},
    # a lower-dimensional report at the same two budgets: only the client's most-used expert, through k-ary
    # randomized response ((epsilon, 0)-DP per round), no loss vector
    "aligned_value_private_top1": VALUE | {"report_epsilon": 1.0, "report_mechanism": "top1"},
    "aligned_value_private_top1_eps8": VALUE | {"report_epsilon": 8.0, "report_mechanism": "top1"},
}
POLICIES = (
    "aligned",
    "aligned_greedy",
    "random",
    "round_robin",
    "topk_affinity",
    "topk_capped",
    "dense",
    "flex_moe",
    "fedmoe",
    "flex_moe_nodeficit",
    "flex_moe_shuffle",
    *[v for v in VARIANTS if v.startswith("aligned_value")],
    # diagnostic references (fedloop.policies): consistency without information, and the partition known
    "sticky_random",
    "oracle_labels",
)
#: The scoring-term ablations of ``aligned_value_uniform_queue``: tabled against it, not against aligned_value.
QUEUE_ABLATIONS = tuple(v for v in VARIANTS if v.startswith("aligned_value_uniform_queue_no"))
BASELINES = ("random", "topk_affinity", "topk_capped", "round_robin", "dense", "flex_moe", "fedmoe")
#: Policies whose paired differences are tabled (when their runs exist), and against what: the baselines, and for
#: issue 19's aligner also the first aligner, its uncoupled twin, its greedy solve and each ablation; for the
#: FLEX-MoE-style policy, the runs that take its pieces apart.
REFERENCES: dict[str, tuple[str, ...]] = {
    "aligned": BASELINES,
    "aligned_value": (
        *BASELINES,
        "aligned",
        *[v for v in VARIANTS if v.startswith("aligned_value_") and v not in QUEUE_ABLATIONS],
    ),
    # what the FLEX-MoE-style policy's lead on masked routing rests on: its deficit, the aligner under its uniform
    # bounds (with and without the load term), top-k under the same cap, and the other published policy
    "flex_moe": (
        "flex_moe_nodeficit",
        "aligned_value_uniform",
        "aligned_value_uniform_noload",
        "aligned_value_uniform_mildload",
        "aligned_value_uniform_queue",
        "aligned_value_queue",
        *QUEUE_ABLATIONS,
        "topk_capped",
        "fedmoe",
        # the baselines issue 19's target names, so that its parts can be read for the published policy as well
        "random",
        "topk_affinity",
    ),
    # the aligner that ties it in final accuracy, against the targets' baselines, taken apart one scoring term at a
    # time
    "aligned_value_uniform_queue": (
        "random",
        "topk_affinity",
        "flex_moe",
        *QUEUE_ABLATIONS,
        "aligned_value_uniform",
        "aligned_value_uniform_queue_shuffle",
        "aligned_value_uniform_queue_explore",
    ),
    # the same without three of its terms (the scores of the FLEX-MoE-style policy's form): against the targets'
    # baselines, whose parts it meets over 300 rounds on the shards
    "aligned_value_uniform_queue_noextras": ("random", "topk_affinity", "flex_moe"),
    # the value term at the FLEX-MoE-style policy's scale: on the scores of that policy's form, against it and the
    # same scores at the aligner's own scale; on the deficit-queue aligner, against the targets' baselines and the
    # aligner it changes
    "aligned_value_uniform_queue_meanloss_noextras": (
        "flex_moe",
        "aligned_value_uniform_queue_noextras",
        "random",
        "topk_affinity",
    ),
    # and with no slot required: against that policy, and the two runs it differs from by one setting
    "aligned_value_uniform_queue_meanloss_noextras_minslots0": (
        "flex_moe",
        "aligned_value_uniform_queue_meanloss_noextras",
        "random",
        "topk_affinity",
    ),
    "aligned_value_uniform_queue_meanloss": (
        "random",
        "topk_affinity",
        "flex_moe",
        "aligned_value_uniform_queue",
        "aligned_value_uniform_queue_meanloss_noextras",
    ),
    "aligned_value_meanloss": ("random", "topk_affinity", "flex_moe"),
    # the deficit queue and mean-loss scale under demand-following bounds: against the targets' baselines and the two
    # aligners it takes its pieces from
    "aligned_value_queue_meanloss": (
        "random",
        "topk_affinity",
        "flex_moe",
        "aligned_value",
        "aligned_value_uniform_queue_meanloss",
    ),
    "aligned_value_uniform_queue_meanloss_shuffle": ("random", "topk_affinity", "flex_moe"),
    # the diagnostics: what an assignment by the clients' labels reaches, and what consistency of the pairs alone
    # gives, against the policies that read reports
    "oracle_labels": (
        "random",
        "sticky_random",
        "topk_affinity",
        "flex_moe",
        "aligned_value",
        "aligned_value_uniform_queue",
    ),
    "sticky_random": ("random", "round_robin", "topk_affinity", "flex_moe", "aligned_value"),
    # the two aligners with the per-pair bonus, against the baselines issue 19's target names
    "aligned_value_explore": ("random", "topk_affinity", "flex_moe"),
    "aligned_value_uniform_queue_explore": ("random", "topk_affinity", "flex_moe"),
    # the same with ties at random: does its standing against the targets' baselines hold on a second draw?
    "aligned_value_uniform_queue_shuffle": ("random", "topk_affinity", "flex_moe"),
    # the second draw of the FLEX-MoE-style policy against its first, the targets' baselines, and the aligners: the
    # deficit-queue aligner and its mean-loss twin (the two level with the first draw in final accuracy), the
    # aligner, and its three-term ablation at that policy's scale with no slot required (the pairs with the second
    # draws of the aligners are tabled here only)
    "flex_moe_shuffle": (
        "flex_moe",
        "random",
        "topk_affinity",
        "aligned_value",
        "aligned_value_uniform_queue",
        "aligned_value_uniform_queue_meanloss",
        "aligned_value_uniform_queue_meanloss_noextras_minslots0",
        "aligned_value_uniform_queue_shuffle",
        "aligned_value_uniform_queue_meanloss_shuffle",
    ),
    # aligned_value with ties at random: against the targets' baselines, and its capability placebo
    "aligned_value_shuffle": (
        "random",
        "topk_affinity",
        "flex_moe",
        "aligned_value_shuffle_nocapability",
    ),
    # the same aligner leaving a client's second slot empty unless a pair beats the price: against the targets'
    # baselines, the published policy whose coverage rule it borrows, and the aligner it changes
    "aligned_value_uniform_queue_sparse": (
        "random",
        "topk_affinity",
        "flex_moe",
        "fedmoe",
        "aligned_value_uniform_queue",
    ),
}
FRACTIONS = (0.7, 0.8, 0.9)
#: A table's column per target
TARGET_COLUMNS = tuple(f"{int(f * 100)}% target" for f in FRACTIONS)
#: The references whose comparisons are also counted seed by seed (``seed_by_seed``): how often each policy reaches
#: a target sooner, at the same round or later, which an interval on ten seeds can hide (one run far off moves it)
SEED_BY_SEED = ("aligned_value", "aligned_value_shuffle")
#: Runs of one policy's scores that differ only in which of several tied optima the solver returns: the flow
#: solver's arc order or a random order (``_shuffle``), and for the aligners with and without the capability term,
#: which on a task whose experts all have one size adds a constant to each client's row and moves no optimum
#: (``_nocapability``).
#: Training amplifies the first differing assignment, so these are draws of one policy; ``draws`` tests whether
#: they are told apart and measures how far apart a seed's draws land, the noise floor of a comparison on that task.
DRAWS: dict[str, tuple[str, ...]] = {
    "aligned_value": (
        "aligned_value",
        "aligned_value_nocapability",
        "aligned_value_shuffle",
        "aligned_value_shuffle_nocapability",
    ),
    "aligned_value_uniform_queue": (
        "aligned_value_uniform_queue",
        "aligned_value_uniform_queue_nocapability",
        "aligned_value_uniform_queue_shuffle",
    ),
    "aligned_value_uniform_queue_meanloss": (
        "aligned_value_uniform_queue_meanloss",
        "aligned_value_uniform_queue_meanloss_shuffle",
    ),
    "flex_moe": ("flex_moe", "flex_moe_shuffle"),
}
#: The aligner whose paired comparisons are also drawn (``federated_<task>_pairs.png``)
PAIRS_REF = "aligned_value"
#: A run that takes one piece away (``..._no<piece>``): its comparison is in the tables and the intervals figure,
#: and its curve is left out of the accuracy and traces figures, where a dozen overlapping curves tell nothing.
ABLATION = re.compile(r"_no[a-z]+$")
#: What names a variant of one of the two aligners the figures draw apart from the baselines
VARIANT_PREFIXES = ("aligned_value_", "flex_moe_")
#: The variants besides the baselines whose assignment traces are drawn: those the report reads them for
TRACED_VARIANTS = ("aligned_value_topk", "aligned_value_uniform_queue", "aligned_value_uniform_queue_sparse")
#: Per task, the policy chosen after a first set of seeds, the first seed it had not seen when it was chosen, and
#: the baselines to table again on the unseen seeds alone: a check that the choice did not fit the first seeds'
#: noise (``aligned_value_uniform_queue`` was defined after seeds 0-4 of ``mnist_shards`` had run).
UNSEEN: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "mnist_shards": ("aligned_value_uniform_queue", 5, ("random", "topk_affinity", "flex_moe")),
}
#: Per results folder (its name) and task, seeds added after the first seeds' intervals had been read: for each
#: reference, the first added seed and the baselines to table on each set alone, and (a fourth item, True) when the
#: seeds added are those below that seed, read second (:class:`Added`). Adding seeds until an interval clears 0 is
#: optional stopping; the added seeds' own table shows whether they alone say what the pooled table says, and the
#: pooled comparison is read at a widened level (:func:`pair_level`). The issue's baselines and the published
#: policies ran in two sets toward the ten seeds issue 18 fixed before any ran; a variant or ablation whose first
#: set was read before a second set was planned is listed here.
ADDED: dict[tuple[str, str], tuple[tuple, ...]] = {
    ("rounds600", "multidomain4"): (("aligned_value", 10, ("random", "topk_affinity", "flex_moe")),),
    ("results", "mnist_shards"): (
        # seeds 5-9 of aligned_value's own ablations, its private reports, its two load-bound variants and its
        # greedy and uncoupled solves, run after seeds 0-4 had been tabled
        (
            "aligned_value",
            5,
            (
                "aligned_value_greedy",
                "aligned_value_topk",
                "aligned_value_noaffinity",
                "aligned_value_noloss",
                "aligned_value_nocapability",
                "aligned_value_noload",
                "aligned_value_noswitching",
                "aligned_value_staleness",
                "aligned_value_noprofiling",
                "aligned_value_private",
                "aligned_value_uniform",
                "aligned_value_queue",
                "aligned_value_uniform_noload",
            ),
        ),
        # seeds 5-9 of the deficit-queue aligner's four one-term ablations, the same way (not the three-term one,
        # whose ten seeds were planned and run together)
        ("aligned_value_uniform_queue", 5, tuple(v for v in QUEUE_ABLATIONS if not v.endswith("_noextras"))),
        # and of the FLEX-MoE-style policy without its deficit, and the aligner's load-bound variants against it
        (
            "flex_moe",
            5,
            ("flex_moe_nodeficit", "aligned_value_uniform", "aligned_value_queue", "aligned_value_uniform_noload"),
        ),
    ),
    ("results", "multidomain4"): (
        # seeds 0-4 of aligned_value's ablations, its greedy solve, uniform bounds and private reports, run after
        # seeds 5-9 had been tabled (the staleness bonus and the other private reports ran on all ten at once)
        (
            "aligned_value",
            5,
            (
                "aligned_value_greedy",
                "aligned_value_uniform",
                "aligned_value_noprofiling",
                "aligned_value_private",
                "aligned_value_novalue",
                "aligned_value_noaffinity",
                "aligned_value_noloss",
                "aligned_value_nocapability",
                "aligned_value_noload",
                "aligned_value_noswitching",
            ),
            True,
        ),
    ),
    ("results", "shakespeare_scripts"): (
        # seeds 5-9 of aligned_value's ablations, run after seeds 0-4 had been tabled: three in one session, three
        # in the next
        (
            "aligned_value",
            5,
            (
                "aligned_value_noloss",
                "aligned_value_noload",
                "aligned_value_noaffinity",
                "aligned_value_nocapability",
                "aligned_value_noprofiling",
                "aligned_value_uniform",
            ),
        ),
        # and seeds 4-9 of the two whose first set's cut-off came before seed 4 (run in the second of those sessions)
        ("aligned_value", 4, ("aligned_value_noswitching", "aligned_value_staleness")),
    ),
}


#: Per results folder (its name) and task, the seeds below which each earlier levelling verdict was read, in order:
#: seeds added after a verdict had been read make the verdict on all seeds one more look at the same question
#: (optional stopping), so :func:`levelling_by_set` tables each set alone and all seeds at a level widened for the
#: looks (Bonferroni, valid when the last look is declared the last before its seeds run). ``multidomain4``'s
#: 800-round verdict was read on seeds 0-19, again after seeds 20-47 were added, and a third and last time after
#: seeds 48 and up were added in a session whose plan fixed that look as the last.
LEVEL_LOOKS: dict[tuple[str, str], tuple[int, ...]] = {("rounds800", "multidomain4"): (20, 48)}


def config(task: str, policy: str, seed: int, rounds: int, quick: bool) -> fedloop.FedConfig:
    if task == "smoke":
        base = dict(dataset="synthetic", n_clients=12, per_round=4, n_experts=4, max_experts=2, top_k=1, hidden=16)
        base |= dict(expert_hidden=8, testbed="experts", data_options={"samples_per_client": 40, "test_size": 200})
    else:
        base = tasks.federation(task, quick)
    base = base | {"seed": seed, "rounds": rounds}
    return fedloop.FedConfig(**(base | VARIANTS.get(policy, {"policy": policy})))


def write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it: a reader, or a run stopped mid-write,
    never sees half a file. One temporary file per process, so that two processes writing one path (two runs given
    the same policy and seed) never write into the same temporary file."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.part")
    tmp.write_text(text)
    tmp.replace(path)


def central_missing(task: str, out: Path) -> bool:
    """Whether ``task``'s central reference run under ``out`` is still to be run (the smoke task has none)."""
    return task != "smoke" and not (run_folder(out, task) / "central.json").exists()


def ensure_central(task: str, quick: bool, out: Path) -> Path:
    """Make ``task``'s folder under ``out`` and its central reference run (``central.json``, the accuracy the
    targets are fractions of) where it is missing (:func:`central_missing`); returns the folder."""
    folder = run_folder(out, task)
    folder.mkdir(parents=True, exist_ok=True)
    central = folder / "central.json"
    if central_missing(task, out):
        epochs = 2 if quick else tasks.CENTRAL_EPOCHS
        acc = tasks.central_accuracy(task, quick=quick, seed=0, epochs=epochs)
        write_whole(central, json.dumps({"accuracy": acc, "seed": 0, "epochs": epochs, "version": tasks.version(task)}))
    return folder


def run_all(
    task: str, seeds: list[int], rounds: int, quick: bool, out: Path, policies: tuple[str, ...] = POLICIES
) -> None:
    folder = ensure_central(task, quick, out)
    for seed in seeds:
        for policy in policies:
            path = run_path(folder, policy, seed)
            if path.exists():
                continue
            started = time.perf_counter()
            history = fedloop.run(config(task, policy, seed, rounds, quick))
            wall = time.perf_counter() - started
            # what the run cost on the machine it ran on (shared, so a cost estimate, never a speed claim)
            record = record_of(policy, seed, history) | {"wall_s": wall, "build": build_environment()}
            write_whole(path, json.dumps(record))
            final = stats.final_accuracy(record["accuracy"])  # the table's figure: mean of the last 10 rounds
            print(f"{task} {policy} seed {seed}: final accuracy {final:.3f}", flush=True)
    if task != "smoke" and save_domains(folder, task, seeds, quick) is None:
        save_classes(folder, task, seeds, quick)


def build_environment() -> dict:
    """What decides this process's arithmetic besides the code and the processor: the torch build, the instruction
    set its kernels use, its thread count, and those of :data:`BUILD_VARIABLES` that are set (unset ones are left out,
    so a record says only what was chosen)."""
    import torch

    found = {"torch": torch.__version__, "kernels": torch.backends.cpu.get_cpu_capability()}
    found["threads"] = torch.get_num_threads()
    return found | {name: os.environ[name] for name in BUILD_VARIABLES if name in os.environ}


def record_of(policy: str, seed: int, history: fedloop.History) -> dict:
    """What a run saves of its history, one list entry per round (``run_all``'s JSON, less its wall time and
    build); also what ``check_build.py`` compares a rerun's first rounds by."""
    return {
        "policy": policy,
        "seed": seed,
        "accuracy": history.column("accuracy"),
        "bytes": [a + b for a, b in zip(history.column("bytes_down"), history.column("bytes_up"))],
        "latency": history.column("latency_s"),
        "load_cv": history.column("load_cv"),
        "loads": [history.records[r].loads for r in history.rounds],
        "routing_entropy": history.column("routing_entropy"),
        "routed_share": history.column("routed_share"),
        "assigned": history.column("assigned"),
    }


def _save_per_seed(folder: Path, name: str, task: str, seeds: list[int], quick: bool, read) -> Path | None:
    """Write (or extend) ``folder / name``, ``{seed: read(data)}`` for the seeds not in it yet, ``data`` the partition
    that seed's runs trained on (:func:`fedloop.loop.load_data`); None, writing nothing, when ``read`` gives None."""
    path = folder / name
    # runs of one task in several processes each add their seeds: the folder's lock makes each read, extend and
    # write whole, so that no process writes over the seeds another has just added
    with _folder_lock(folder):
        known = json.loads(path.read_text()) if path.exists() else {}
        for seed in seeds:
            if str(seed) in known:
                continue
            value = read(fedloop.loop.load_data(config(task, "random", seed, 1, quick)))
            if value is None:
                return None
            known[str(seed)] = value
        write_whole(path, json.dumps(known, indent=0, sort_keys=True) + "\n")
    return path


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on ``folder`` (an advisory ``flock`` on the folder itself, no lock file left behind) while
    the block runs; where ``fcntl`` is missing (not POSIX) or the folder is (nothing can be saved in it), no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX has it
        fcntl = None
    if fcntl is None or not folder.is_dir():
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def save_domains(folder: Path, task: str, seeds: list[int], quick: bool) -> Path | None:
    """Write (or extend) ``domains.json`` in ``folder``: ``{seed: {client id: domain}}`` for the seeds given, read
    from the partition each seed's runs trained on (``info["client_domain"]`` of :func:`fedloop.loop.load_data`).

    The traces' domain purity needs each client's domain; on ``multidomain`` it is also in the client id, but a
    speaker's id does not name its script, and which script a speaker writes in changes with the seed. Returns
    None, writing nothing, when the task's data has no domains.
    """

    def read(data):
        return dict(zip(data.client_ids, data.info["client_domain"])) if "client_domain" in data.info else None

    return _save_per_seed(folder, "domains.json", task, seeds, quick, read)


def save_classes(folder: Path, task: str, seeds: list[int], quick: bool, share: float = 0.25) -> Path:
    """Write (or extend) ``classes.json`` in ``folder``: ``{seed: {client id: [classes]}}``, the classes that make
    up at least ``share`` of each client's samples in the partition each seed's runs trained on.

    The traces' class purity needs them on a task whose clients hold a few classes but no domain
    (``mnist_shards``: two shards of sorted labels each, so one or two classes, a shard that straddles two classes
    adding a few samples of the second, which ``share`` leaves out).
    """

    def read(data):
        held = {}
        for cid, (_, y) in zip(data.client_ids, data.clients):
            counts = np.bincount(y.cpu().numpy(), minlength=data.n_classes)
            held[cid] = np.flatnonzero(counts >= share * counts.sum()).tolist()
        return held

    return _save_per_seed(folder, "classes.json", task, seeds, quick, read)


def load_classes(folder: Path) -> dict[int, dict[str, list[int]]]:
    """``classes.json`` of ``folder`` (:func:`save_classes`) keyed by integer seed; empty when there is none."""
    path = folder / "classes.json"
    return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def load_domains(folder: Path) -> dict[int, dict[str, str]]:
    """``domains.json`` of ``folder`` (:func:`save_domains`) keyed by integer seed; empty when there is none."""
    path = folder / "domains.json"
    return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def run_folder(out: Path, task: str, version: str | None = None) -> Path:
    """Where a task's runs live: one folder per task definition (``version``, by default today's:
    :func:`fedloop.tasks.version`), never mixed."""
    return out / "federated" / f"{task}-{version or tasks.version(task)}"


def run_path(folder: Path, policy: str, seed: int) -> Path:
    """The record of ``policy``'s run on ``seed`` in a task's ``folder`` (:func:`run_folder`)."""
    return folder / f"{policy}-seed{seed}.json"


def result_bases(root: Path) -> list[tuple[str, Path]]:
    """(label, folder) of every results folder under ``root``: ``root`` itself (label ``results``) and each of its
    subfolders (label: its name), each of which may hold ``federated/<task>-<version>`` folders of runs."""
    return [("results", root), *((p.name, p) for p in sorted(root.iterdir()) if p.is_dir())]


def run_budget(runs: dict[str, dict[int, dict]]) -> int:
    """The budget of a folder's runs: the most rounds any of them ran."""
    return max(len(rec["accuracy"]) for by_seed in runs.values() for rec in by_seed.values())


def load_runs(folder: Path) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(folder.glob("*-seed*.json")):
        rec = json.loads(path.read_text())
        runs.setdefault(rec["policy"], {})[int(rec["seed"])] = rec
    return runs


def render(task: str, out: Path, command: str, version: str | None = None) -> Path:
    """Tables and curves of ``task``'s saved runs: ``federated_<task>.{md,png}`` for today's definition, and
    ``federated_<task>-<version>.{md,png}`` for an earlier ``version`` kept as a record."""
    today = tasks.version(task)
    version = version or today
    folder = run_folder(out, task, version)
    stem = f"federated_{task}" if version == today else f"federated_{task}-{version}"
    runs = load_runs(folder)
    if not runs:
        raise FileNotFoundError(f"no saved runs of task {task!r} in {folder}: run the comparison first")
    central_file = folder / "central.json"
    central = json.loads(central_file.read_text())["accuracy"] if central_file.exists() else None
    best = max(stats.final_accuracy(r["accuracy"]) for pol in runs.values() for r in pol.values())
    reference = central if central is not None else best
    budget = run_budget(runs)
    lines = [
        f"# Federated comparison: {task} {version} ({datetime.now(timezone.utc):%Y-%m-%d}, `{command}`)",
        "",
        f"Central accuracy {reference:.4f}"
        + ("" if central is not None else " (no central run: the best final accuracy stands in)")
        + f"; {seed_note(runs)}; budget {budget} rounds; censored runs count at the budget"
        + cost_note(runs)
        + ".",
        "",
        "| policy | "
        + " | ".join(f"reached {int(f * 100)}% (n) / KM median / RMST" for f in FRACTIONS)
        + " | AUC | final accuracy | MB to 80% (n) | simulated s to 80% (n) | load CV | dead experts"
        + " | routing entropy |",
        "|---|" + "---|" * (len(FRACTIONS) + 7),
    ]
    summary = target_hits(runs, reference)
    for policy, by_seed in runs.items():
        recs = [by_seed[s] for s in sorted(by_seed)]
        cells = []
        for f in FRACTIONS:
            hits = [summary[(policy, f)][s] for s in sorted(by_seed)]
            t, e = [h[0] for h in hits], [h[1] for h in hits]
            median = stats.km_median(t, e)
            cells.append(
                f"{sum(e)}/{len(e)} / {'not reached' if median is None else int(median)} / "
                f"{stats.restricted_mean(t, e, budget):.1f}"
            )
        auc = statistics.fmean(stats.area_under_curve(r["accuracy"]) for r in recs)
        final = statistics.fmean(stats.final_accuracy(r["accuracy"]) for r in recs)
        mb, secs = [], []
        for r in recs:
            k, hit = stats.rounds_to_target(r["accuracy"], 0.8 * reference)
            if hit:
                mb.append(sum(r["bytes"][:k]) / 1e6)
                secs.append(sum(r["latency"][:k]))
        cv = statistics.fmean(statistics.fmean(r["load_cv"]) for r in recs)
        dead = statistics.fmean(int((np.asarray(r["loads"][-10:]).sum(axis=0) == 0).sum()) for r in recs)
        mb_text = f"{statistics.fmean(mb):.1f} ({len(mb)})" if mb else "- (0)"
        secs_text = f"{statistics.fmean(secs):.1f} ({len(secs)})" if secs else "- (0)"
        # runs saved before the entropy was recorded have none: shown as "-", never as 0
        entropies = [statistics.fmean(r["routing_entropy"][-10:]) for r in recs if r.get("routing_entropy")]
        entropy = f"{statistics.fmean(entropies):.2f}" if len(entropies) == len(recs) else "-"
        lines.append(
            f"| {policy} | "
            + " | ".join(cells)
            + f" | {auc:.4f} | {final:.4f} | {mb_text} | {secs_text} | {cv:.3f} | {dead:.1f} | {entropy} |"
        )
    pairs = {}
    for ref, against in REFERENCES.items():
        levels = {base: pair_level(out.name, task, ref, base) for base in against}
        pairs[ref] = paired_rows(ref, list(against), summary, runs, budget, levels=levels)
        lines += reduction_table(ref, pairs[ref])
    for ref in SEED_BY_SEED:
        if pairs.get(ref):
            lines += seed_by_seed(ref, [row["base"] for row in pairs[ref]], summary, runs)
    for ref, group in DRAWS.items():
        lines += draws(ref, group, summary, runs)
    splits = []
    if task in UNSEEN:
        ref, first, against = UNSEEN[task]
        (low, in_low), (high, in_high) = seed_sets(first)
        chosen = (
            (f"{low} (those `{ref}` was chosen on)", in_low),
            (f"{high} (not seen when `{ref}` was chosen)", in_high),
        )
        splits.append((ref, against, chosen))
    for entry in added_entries(out.name, task):
        # several references can share a first seed: each split names its reference, so no two headings are alike
        low, high = seed_sets(entry.first)
        (read, in_read), (added, in_added) = (high, low) if entry.below else (low, high)
        tables = (
            (f"{read} (the first set, `{entry.ref}` against)", in_read),
            (f"{added} (added after the first set's intervals were read, `{entry.ref}` against)", in_added),
        )
        splits.append((entry.ref, entry.against, tables))
    for ref, against, tables in splits:
        for title, keep in tables:
            part = {p: {s: r for s, r in by_seed.items() if keep(s)} for p, by_seed in runs.items()}
            lines += reduction_table(ref, paired_rows(ref, list(against), summary, part, budget), title=title)
    lines += budget_ceiling([ref for ref, rows in pairs.items() if rows], summary, budget)
    lines += along_the_budget(runs, budget)
    lines += levelling_off(runs, budget)
    if (out.name, task) in LEVEL_LOOKS and not too_short_to_level(budget):
        lines += levelling_by_set(runs, budget, LEVEL_LOOKS[(out.name, task)])
    lines += same_runs(runs)
    by_domain = task != "smoke" and tasks.federation(task, False)["dataset"] == "multidomain"
    lines += expert_use(runs, budget, by_domain, domains=load_domains(folder), classes=load_classes(folder))
    figure = plot_curves(runs, reference, out / f"{stem}.png")
    lines += ["", f"Accuracy against rounds: `{figure.name}` (mean over each policy's seeds, band from min to max)."]
    traces_path, pairs_path = out / f"{stem}_traces.png", out / f"{stem}_pairs.png"
    draws_path = out / f"{stem}_draws.png"
    drawn_draws = plot_draws(summary, runs, draws_path)
    if drawn_draws is not None:
        lines += [f"Each seed's draws of one aligner's scores: `{drawn_draws.name}`."]
    traces = plot_traces(runs, traces_path)
    if traces is not None:
        lines += [f"Routed share and experts trained per round: `{traces.name}` (traced seeds only)."]
    intervals = plot_pairs(PAIRS_REF, pairs.get(PAIRS_REF, []), pairs_path)
    if intervals is not None:
        lines += [f"`{PAIRS_REF}` against each policy, the intervals above drawn: `{intervals.name}`."]
    # a figure an earlier render drew from runs that are gone would otherwise stay beside a table without them
    for drawn, path in ((traces, traces_path), (intervals, pairs_path), (drawn_draws, draws_path)):
        if drawn is None:
            path.unlink(missing_ok=True)
    # runs kept apart in a subfolder of the results (a longer budget) share the results' gates
    gates = next((g for g in ("gates.md", "../gates.md") if (out / g).exists()), None)
    lines += ["", f"Sanity gates: see `{gates}`." if gates else "Sanity gates: not measured."]
    report = out / f"{stem}.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def target_hits(
    runs: dict[str, dict[int, dict]], reference: float
) -> dict[tuple[str, float], dict[int, tuple[int, bool]]]:
    """Per (policy, target fraction of ``FRACTIONS``), each seed's ``stats.rounds_to_target`` of ``fraction x
    reference``: (rounds, reached), a missed target counted at the run's length (censored, never dropped)."""
    return {
        (policy, f): {s: stats.rounds_to_target(by_seed[s]["accuracy"], f * reference) for s in sorted(by_seed)}
        for policy, by_seed in runs.items()
        for f in FRACTIONS
    }


def table_head(title: str, intro: str, columns: list[str]) -> list[str]:
    """Markdown lines that open a section of the results: its heading, the sentence saying what the table holds,
    and the table's header row and rule."""
    return ["", f"## {title}", "", intro, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def along_the_budget(runs: dict[str, dict[int, dict]], budget: int, window: int = 10) -> list[str]:
    """Table lines: each policy's mean accuracy over the ``window`` rounds ending at each quarter of the budget,
    so that a reader sees whether the curves still rise at the end (no plateau yet) or have levelled off."""
    window = min(window, budget)
    ends = sorted({max(window, round(budget * q / 4)) for q in (1, 2, 3, 4)})
    lines = table_head(
        "Accuracy along the budget",
        f"Mean test accuracy of the {window} rounds ending at each round, over each policy's seeds (a run shorter "
        "than the round: -):",
        ["policy", "seeds (n)", *(f"round {k}" for k in ends)],
    )
    for policy, by_seed in runs.items():
        accs = [r["accuracy"] for r in by_seed.values()]
        cells = []
        for k in ends:
            # at the budget, the same figure as the table's final accuracy
            cells.append(
                f"{statistics.fmean(stats.final_accuracy(a[:k], window) for a in accs):.4f}"
                if all(len(a) >= k for a in accs)
                else "-"
            )
        lines.append(f"| {policy} | {len(by_seed)} | " + " | ".join(cells) + " |")
    return lines


#: Levelling off: a policy whose runs gain less than this much accuracy over the last stretch (``2 x window``
#: rounds) of the budget, shown by the interval, has levelled off there; more, shown, and it is still rising
LEVEL_TOLERANCE = 0.01
#: The two-sided level of an interval read once (every table's, unless it says otherwise): 95%
LEVEL = 0.95


def level_window(budget: int) -> int:
    """The window of :func:`levelling_off` for a budget: 50 rounds, shrunk to a quarter of short budgets (the
    quick mode's) so that the table still has its two windows and a step between them."""
    return max(1, min(50, budget // 4))


def too_short_to_level(budget: int) -> bool:
    """Whether a budget is too short for :func:`level_rows`: it needs the last window, the one ``2 x window`` rounds
    before it, and a step between them (``3 x window`` rounds)."""
    return budget < 3 * level_window(budget)


def level_rows(
    runs: dict[str, dict[int, dict]], budget: int, tolerance: float = LEVEL_TOLERANCE, level: float = LEVEL
) -> list[dict]:
    """Whether each policy's curve has levelled off by the end of the budget, one dict per policy.

    For seed s let :math:`w_s(r)` be the mean test accuracy of rounds :math:`r - w + 1 .. r` (``w`` from
    :func:`level_window`: 50 rounds on budgets of 200 and more). The gain over the last :math:`2w` rounds is
    :math:`G = \\operatorname{mean}_s\\, w_s(B) - w_s(B - 2w)`, each seed paired with itself, with a paired
    bootstrap interval over seeds (``level``: 95% unless asked). The policy has *levelled off* when it lies below
    ``tolerance`` (less than a point of accuracy gained, shown), is *still rising* when it lies above, and is
    undetermined otherwise. ``near`` is the first :math:`r = 2w, 3w, \\ldots, B` with
    :math:`\\operatorname{mean}_s\\, w_s(B) - w_s(r) <` ``tolerance``: where the curve came within a point of its
    end. Only runs that span the budget count; a policy with none, or a budget shorter than :math:`3w`, has no row.

    Returns
    -------
    list of dict
        ``{"policy", "n", "last", "gain": (point, low, high), "verdict", "near", "settle"}``, ``settle`` from
        :func:`seeds_to_settle`.
    """
    if too_short_to_level(budget):
        return []
    window = level_window(budget)
    span = 2 * window
    ends = list(range(span, budget + 1, window))
    if ends[-1] != budget:
        ends.append(budget)
    rows = []
    for policy, by_seed in runs.items():
        accs = np.array([r["accuracy"][:budget] for r in by_seed.values() if len(r["accuracy"]) >= budget])
        if accs.size == 0:
            continue
        means = {r: accs[:, r - window : r].mean(axis=1) for r in {*ends, budget - span}}
        gain = means[budget] - means[budget - span]
        point, low, high = stats.paired_bootstrap(lambda idx, g=gain: float(g[idx].mean()), len(gain), level=level)
        verdict = "levelled off" if high < tolerance else "still rising" if low > tolerance else "undetermined"
        near = next(r for r in ends if float((means[budget] - means[r]).mean()) < tolerance)
        rows.append(
            {
                "policy": policy,
                "n": len(gain),
                "last": float(means[budget].mean()),
                "gain": (point, low, high),
                "verdict": verdict,
                "near": near,
                "settle": seeds_to_settle(gain, tolerance, level),
            }
        )
    return rows


def seeds_to_settle(gain: np.ndarray, tolerance: float = LEVEL_TOLERANCE, level: float = LEVEL) -> int | None:
    """Roughly how many seeds :func:`level_rows`' verdict would need at the measured mean and spread of the
    per-seed gains ``gain`` (n,): the smallest n with :math:`z\\, s / \\sqrt{n} < |\\bar g - t|` (``t`` the
    tolerance, ``s`` the seeds' standard deviation, ``z`` the normal quantile of the two-sided ``level``: 1.96 at
    95%), a normal approximation of the bootstrap interval, for planning, not a result. None with fewer than two
    seeds or a mean at the tolerance itself (no number of seeds settles it)."""
    if gain.size < 2 or float(gain.mean()) == tolerance:
        return None
    spread = float(np.std(gain, ddof=1))
    z = statistics.NormalDist().inv_cdf(1 - (1 - level) / 2)
    return max(2, math.ceil((z * spread / abs(float(gain.mean()) - tolerance)) ** 2))


def level_cells(row: dict) -> str:
    """The last cells of a :func:`level_rows` row as both levelling tables end: gain with its interval, verdict,
    and the round from which the curve is within the tolerance of its end."""
    point, low, high = row["gain"]
    return f"{point:+.4f} [{low:+.4f}, {high:+.4f}] | {row['verdict']} | {row['near']} |"


def levelling_off(runs: dict[str, dict[int, dict]], budget: int, tolerance: float = LEVEL_TOLERANCE) -> list[str]:
    """Table lines of :func:`level_rows`: where each policy's curve levels off within the budget."""
    window = level_window(budget)
    span = 2 * window
    lines = table_head(
        "Where the curves level off",
        f"Mean accuracy of each seed's last {window} rounds; its gain over the {span} rounds before (the mean over "
        f"seeds of the last {window} rounds' accuracy minus that of the {window} rounds ending {span} rounds "
        f"earlier, paired bootstrap 95% interval); levelled off when the interval lies below {tolerance:g}, still "
        f"rising when it lies above, undetermined otherwise; and the first round (in steps of {window}) at "
        f"which the mean of the {window} rounds ending there has come within {tolerance:g} of the last "
        f"{window} rounds' (runs shorter than the budget left out):",
        [
            "policy",
            "seeds (n)",
            f"last {window} rounds",
            f"gain over the last {span} rounds",
            "verdict",
            f"within {tolerance:g} of the end from round",
        ],
    )
    if too_short_to_level(budget):
        return [*lines, f"| (budget of {budget} rounds: too short for two windows) | | | | | |"]
    for row in level_rows(runs, budget, tolerance):
        lines.append(f"| {row['policy']} | {row['n']} | {row['last']:.4f} | {level_cells(row)}")
    return lines


def seed_sets(first: int) -> tuple[tuple[str, Callable[[int], bool]], tuple[str, Callable[[int], bool]]]:
    """The seeds below ``first`` and those from ``first`` up: each set's heading (its start) and membership test."""
    return (f"Seeds below {first} only", lambda s: s < first), (f"Seeds {first} and up only", lambda s: s >= first)


class Added(NamedTuple):
    """An entry of :data:`ADDED`: ``ref``'s comparisons with ``against`` had their intervals read on a first set of
    seeds before the others were added; the added seeds are those from ``first`` up, or (``below``) those under it."""

    ref: str
    first: int
    against: tuple[str, ...]
    below: bool = False


def added_entries(label: str, task: str) -> list[Added]:
    """The :data:`ADDED` entries of results folder ``label`` (its name) and ``task``."""
    return [Added(*entry) for entry in ADDED.get((label, task), ())]


def added_looks(label: str, task: str, ref: str, base: str) -> int:
    """How many times the intervals of ``ref`` against ``base`` (either way round) on all seeds of results folder
    ``label`` (its name) have been read: 2 when :data:`ADDED` lists seeds added to that comparison after its first
    intervals had been read, else 1."""
    for entry in added_entries(label, task):
        if (ref == entry.ref and base in entry.against) or (base == entry.ref and ref in entry.against):
            return 2
    return 1


def level_looks(label: str, task: str) -> int:
    """How many times the levelling verdicts on all seeds of results folder ``label`` (its name) have been read:
    one more than the earlier looks :data:`LEVEL_LOOKS` lists."""
    return len(LEVEL_LOOKS.get((label, task), ())) + 1


def pair_level(label: str, task: str, ref: str, base: str) -> float:
    """The level at which the comparison of ``ref`` and ``base`` on all seeds of folder ``label`` is read:
    :func:`widened_level` of its :func:`added_looks` (95% when it was read once)."""
    return widened_level(added_looks(label, task, ref, base))


def widened_level(looks: int) -> float:
    """The two-sided level of the interval read at each of ``looks`` looks at one verdict, so that a false
    "levelled off" (or "still rising") has at most the 2.5% chance of one look at 95% over all of them
    (Bonferroni): 95% for one look, 97.5% for two."""
    return 1 - (1 - LEVEL) / looks


def levelling_by_set(
    runs: dict[str, dict[int, dict]], budget: int, looks: tuple[int, ...], tolerance: float = LEVEL_TOLERANCE
) -> list[str]:
    """Table lines: :func:`level_rows` on each set of seeds between the ``looks`` (the seeds below which an earlier
    verdict was read, ascending) alone, at 95%, and on all seeds at :func:`widened_level` of ``len(looks) + 1``.

    A verdict read on seeds 0..a-1 and read again after seeds were added is two looks at one question; with a 95%
    interval at each look, a false "levelled off" is more likely than 2.5% over both. The widened interval on all
    seeds (Bonferroni over the looks) keeps that chance at 2.5% or less; each set alone shows whether the seeds
    added say by themselves what all seeds say."""
    bounds = [0, *looks, None]
    sets = []
    for lo, hi in itertools.pairwise(bounds):
        label = f"below {hi}" if lo == 0 else f"{lo} and up" if hi is None else f"{lo} to {hi - 1}"
        sets.append((label, lambda s, lo=lo, hi=hi: s >= lo and (hi is None or s < hi), LEVEL))
    widened = widened_level(len(looks) + 1)
    sets.append((f"all ({len(looks) + 1} looks)", lambda s: True, widened))
    window = level_window(budget)
    lines = table_head(
        "Where the curves level off, seed set by seed set",
        "Seeds were added after the verdict on the seeds below "
        + " and again on those below ".join(str(k) for k in looks)
        + f" had been read, so the verdict above is one of {len(looks) + 1} looks at the same question (optional "
        "stopping). Each set of seeds alone, with a "
        f"95% interval, and all seeds with a {widened:.1%} interval (Bonferroni over the looks, so that a false "
        f"levelled off stays at 2.5% or less over all of them); the columns as above:",
        [
            "policy",
            "seeds",
            "seeds (n)",
            "interval",
            f"gain over the last {2 * window} rounds",
            "verdict",
            f"within {tolerance:g} of the end from round",
        ],
    )
    for policy, by_seed in runs.items():
        for label, keep, level in sets:
            part = {policy: {s: r for s, r in by_seed.items() if keep(s)}}
            for row in level_rows(part, budget, tolerance, level):
                lines.append(f"| {policy} | {label} | {row['n']} | {level:.1%} | {level_cells(row)}")
    return lines


#: The per-round fields two runs are compared on, in the order a difference is named within a round
COMPARED = ("accuracy", "loads", "assigned")


def first_difference(a: dict, b: dict, fields: tuple[str, ...] = COMPARED) -> tuple[int, str] | None:
    """The first round (1-based) at which run ``b`` departs from run ``a``, and in what; None if none.

    ``a`` and ``b`` are runs as saved (per-round lists). The ``fields`` are compared, in that order within a round,
    over the rounds of ``b`` and only where both runs have them (a run saved before assignments were recorded has no
    ``assigned``, an untraced one an empty list).
    """
    for k in range(len(b["accuracy"])):
        for name in fields:
            if name in a and name in b and k < min(len(a[name]), len(b[name])) and b[name][k] != a[name][k]:
                return k + 1, name
    return None


def same_runs(runs: dict[str, dict[int, dict]], reference: str = "aligned_value") -> list[str]:
    """Table lines: for each of ``reference``'s variants (``<reference>_...``), on how many of the seeds both ran
    its run is ``reference``'s round for round (the same accuracy at every round, and the same assignments where
    both were traced), and from which round the others part. A piece whose removal leaves the runs unchanged did
    nothing on those seeds; empty when no variant's run equals the reference's on any seed."""
    if reference not in runs:
        return []
    rows = []
    for policy, by_seed in runs.items():
        if not policy.startswith(reference + "_"):
            continue
        seeds = sorted(set(by_seed) & set(runs[reference]))
        parts = {}
        for seed in seeds:
            a, b = runs[reference][seed], by_seed[seed]
            found = first_difference(a, b, ("accuracy", "assigned"))
            if found is None and len(a["accuracy"]) != len(b["accuracy"]):  # one is the other's start: they part
                found = (min(len(a["accuracy"]), len(b["accuracy"])) + 1, "rounds")
            parts[seed] = None if found is None else found[0]
        same = [seed for seed in seeds if parts[seed] is None]
        if same:
            others = ", ".join(f"{seed}: {parts[seed]}" for seed in seeds if parts[seed] is not None) or "-"
            rows.append(f"| {policy} | {len(seeds)} | {len(same)} | {', '.join(map(str, same))} | {others} |")
    if not rows:
        return []
    return (
        table_head(
            f"Runs that are `{reference}`'s, round for round",
            f"Variants of `{reference}` whose run on a seed is `{reference}`'s own (the same accuracy at every round "
            "and, where both were traced, the same assignments), with the round from which the others part:",
            [
                "policy",
                "seeds both ran (n)",
                "the same run (n)",
                "seeds with the same run",
                "seed: first round that differs",
            ],
        )
        + rows
    )


def is_traced(record: dict) -> bool:
    """Whether a run was saved with assignment traces. A one-expert model (dense) has no routing for an assignment
    to follow, so its runs never count as traced."""
    return bool(record.get("assigned")) and len(record["loads"][0]) > 1


def traced(recs: list[dict]) -> list[dict]:
    """The runs of ``recs`` saved with assignment traces (:func:`is_traced`), in their order."""
    return [r for r in recs if is_traced(r)]


def expert_use(
    runs: dict[str, dict[int, dict]],
    budget: int,
    by_domain: bool,
    window: int = 50,
    domains: dict[int, dict[str, str]] | None = None,
    classes: dict[int, dict[str, list[int]]] | None = None,
) -> list[str]:
    """Table lines: what the traces of expert load and of the assignment show, per policy.

    From the loads (every run): experts trained per round; client-expert pairs assigned per round (the slots
    filled: a policy that leaves slots empty assigns fewer than the clients offer); the effective number of
    experts trained in the last ``window`` rounds, ``exp`` of the entropy of their summed loads (16 for even loads
    on 16 experts, 1 for one expert); the overlap of consecutive rounds' sets of trained experts (Jaccard, mean
    over the last ``window``).
    From the assignment traces (runs saved with ``routed_share`` and ``assigned``; older runs have none): the
    routed share (``fedloop.RoundRecord.routed_share``) over the first and the last ``window`` rounds and, where
    clients hold one domain each, the domain purity of the last ``window`` rounds: over experts, the slots of each
    expert's most frequent trainer domain over all its slots. A client's domain is read from ``domains`` (seed ->
    client id -> domain, :func:`load_domains`) where it holds the run's seed, else from a client id
    ``<domain>-<k>`` when ``by_domain``; a run with neither has no purity. On a task without domains whose clients'
    classes are given (``classes``: seed -> client id -> the classes it holds, :func:`load_classes`) the column is
    the class purity instead: over experts, the slots whose client holds the expert's most often held class, over
    all its slots (1 when every client that trains an expert holds one class in common). Last, the repeated pairs
    of the last ``window`` rounds: of the experts given to a client that had been given experts before in the run,
    the share it had also been given the previous time (pooled over those pairs), which the per-pair ``explore``
    term lowers.
    A policy with private reports (``report_epsilon``) has its routed shares marked ``*``: they are of the noised
    reports the server saw, and a line under the table says so.
    """
    window = min(window, budget)
    domains = domains or {}
    with_purity = by_domain or bool(domains)
    classes = {} if with_purity else (classes or {})
    kind = "class" if classes else "domain"
    lines = table_head(
        "Expert use along the run",
        "Loads (all seeds): experts trained per round; client-expert pairs assigned per round; effective number of "
        f"experts trained in the last {window} rounds (exp of the entropy of their summed loads); overlap (Jaccard) "
        f"of consecutive rounds' trained experts, last {window} rounds. Assignment traces (seeds saved with them): "
        "share of each assigned client's reported routing that falls on its assigned experts (routed share), first "
        f"and last {window} rounds"
        + (
            f"; domain purity of the last {window} rounds (per expert, the share of its slots taken by its most "
            "frequent trainer domain, pooled over experts)"
            if with_purity
            else f"; class purity of the last {window} rounds (per expert, the share of its slots whose client holds "
            "the class its trainers most often hold, pooled over experts; a client holds the classes that make up a "
            "quarter of its samples or more)"
            if classes
            else ""
        )
        + f"; repeated pairs of the last {window} rounds (of the experts given to a client given experts before, "
        "the share it was also given the previous time):",
        [
            "policy",
            "seeds (n)",
            "experts trained per round",
            "pairs per round",
            f"effective experts, last {window}",
            f"overlap of consecutive rounds, last {window}",
            "traced seeds (n)",
            f"routed share, first {window}",
            f"routed share, last {window}",
            f"{kind} purity, last {window}",
            f"repeated pairs, last {window}",
        ],
    )
    marked = False
    for policy, by_seed in runs.items():
        recs = [by_seed[s] for s in sorted(by_seed)]
        per_round, pairs, effective, overlap = [], [], [], []
        for r in recs:
            loads = np.asarray(r["loads"], dtype=float)
            per_round.append(float((loads > 0).sum(axis=1).mean()))
            pairs.append(float(loads.sum(axis=1).mean()))
            total = loads[-window:].sum(axis=0)
            share = total[total > 0] / total.sum() if total.sum() > 0 else np.ones(1)
            effective.append(float(np.exp(-(share * np.log(share)).sum())))
            sets = [frozenset(np.flatnonzero(row)) for row in loads[-window:]]
            if len(sets) > 1:  # a one-round budget has no consecutive rounds
                overlap.append(statistics.fmean(len(a & b) / max(1, len(a | b)) for a, b in itertools.pairwise(sets)))
        with_traces = {seed: by_seed[seed] for seed in sorted(by_seed) if is_traced(by_seed[seed])}
        first, last, purity, repeated = [], [], [], []
        for seed, r in with_traces.items():
            # a round nobody was assigned in has no share (NaN): left out of the mean
            shares = np.asarray(r["routed_share"], dtype=float)
            first.append(float(np.nanmean(shares[:window])))
            last.append(float(np.nanmean(shares[-window:])))
            again = repeated_pairs(r["assigned"], window)
            if again is not None:
                repeated.append(again)
            recent = r["assigned"][-window:]
            if seed in classes:
                purity.append(group_purity(recent, classes[seed]))
                continue
            named = domains.get(seed)
            if named is None and not by_domain:
                continue
            # one domain per client: from the map, else from a client id <domain>-<k>
            clients = {client for given in recent for client in given}
            held = {c: [named[c] if named is not None else c.rsplit("-", 1)[0]] for c in clients}
            purity.append(group_purity(recent, held))

        def mean(values: list[float], digits: int = 2) -> str:
            return f"{statistics.fmean(values):.{digits}f}" if values else "-"

        # a private policy's routed share is that of the noised reports the server saw, not of the true routing
        noised = "*" if with_traces and VARIANTS.get(policy, {}).get("report_epsilon") else ""
        lines.append(
            f"| {policy} | {len(recs)} | {mean(per_round, 1)} | {mean(pairs)} | {mean(effective, 1)} | "
            f"{mean(overlap)} | {len(with_traces)} | {mean(first)}{noised} | {mean(last)}{noised} | "
            f"{mean(purity) if with_purity or classes else '-'} | {mean(repeated)} |"
        )
        marked = marked or bool(noised)
    if marked:
        lines += ["", "\\*: share of the noised (private) reports the server saw, not of the clients' true routing."]
    return lines


def group_purity(assigned: list[dict[str, list]], held: dict[str, list]) -> float:
    """Over the rounds of ``assigned`` (client id -> experts), per expert the slots whose client holds (``held``:
    client id -> its groups: the classes it holds, or its one domain) the group most often held among the expert's
    slots; their sum over all slots (NaN for none). A client holding two classes counts for both, so a group of
    clients that share one class scores 1 and a mix of unrelated clients about the largest share of one class among
    them; with one domain per client this is the domain purity."""
    slots: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    total = 0
    for given in assigned:
        for client, experts in given.items():
            for j in experts:
                slots[j].update(held[client])
                total += 1
    return sum(max(c.values(), default=0) for c in slots.values()) / total if total else float("nan")


def repeated_pairs(assigned: list[dict[str, list[int]]], window: int) -> float | None:
    """Of the experts given in the last ``window`` rounds of ``assigned`` (per round, client id -> experts) to a
    client given experts in an earlier round, the share it was also given the previous time; None without any."""
    before: dict[str, set[int]] = {}
    again = total = 0
    start = len(assigned) - window
    for r, given in enumerate(assigned):
        for client, experts in given.items():
            if r >= start and client in before:
                again += len(before[client] & set(experts))
                total += len(experts)
            if experts:
                before[client] = set(experts)
    return again / total if total else None


def plot_traces(runs: dict[str, dict[int, dict]], path: Path, smooth: int = 10) -> Path | None:
    """Routed share and experts trained per round against rounds, per policy (mean over its traced seeds, band
    from min to max, each seed's curve a ``smooth``-round moving mean); None when no run has traces. One-expert
    (dense) runs are left out: they have no routing for an assignment to follow."""
    kernel = np.ones(smooth) / smooth

    def moving(values) -> np.ndarray:
        # a round nobody was assigned in (NaN) is left out of its windows' means, not counted as 0
        values = np.asarray(values, dtype=float)
        seen = np.convolve(~np.isnan(values), kernel, mode="valid")
        total = np.convolve(np.nan_to_num(values, nan=0.0), kernel, mode="valid")
        return np.divide(total, seen, out=np.full_like(total, np.nan), where=seen > 0)

    share, used = {}, {}
    for policy, by_seed in runs.items():
        if policy.startswith(VARIANT_PREFIXES) and policy not in TRACED_VARIANTS:
            continue  # the table has every policy's traces; the figure those it can show apart
        runs_traced = traced([by_seed[s] for s in sorted(by_seed)])
        if not runs_traced:
            continue
        name = f"{policy} (n={len(runs_traced)})"
        share[name] = np.array([moving(r["routed_share"]) for r in runs_traced])
        used[name] = np.array([moving((np.asarray(r["loads"]) > 0).sum(axis=1)) for r in runs_traced])
    if not share:
        return None
    panels = {
        f"routed share ({smooth}-round moving mean)": share,
        f"experts trained per round ({smooth}-round moving mean)": used,
    }
    return plots.plot_accuracy_panels(
        panels, path, ylabel="per-round value (see titles)", sharey=False, legend_loc="below"
    )


def cost_note(runs: dict[str, dict[int, dict]]) -> str:
    """What a run cost: the median and the range of the wall seconds of the runs saved with them (runs saved
    before the cost was recorded have none; no such run, no note). A run's wall time on a shared machine is an
    estimate of the cost of the benchmark, not a measurement of any policy's speed."""
    walls = [r["wall_s"] for by_seed in runs.values() for r in by_seed.values() if r.get("wall_s") is not None]
    if not walls:
        return ""
    return (
        f"; wall time per run (the {len(walls)} runs saved with it): median {statistics.median(walls):.0f} s, "
        f"{min(walls):.0f}-{max(walls):.0f} s"
    )


def seed_note(runs: dict[str, dict[int, dict]]) -> str:
    """How many seeds each policy ran: one count when all ran the same seeds, else the count per group."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for policy, by_seed in runs.items():
        groups.setdefault(tuple(sorted(by_seed)), []).append(policy)
    if len(groups) == 1:
        return f"{len(next(iter(groups)))} paired seeds"
    parts = [
        f"{len(seeds)} seeds ({', '.join(f'`{p}`' for p in policies)})"
        for seeds, policies in sorted(groups.items(), key=lambda item: (-len(item[0]), item[0]))
    ]
    return "seeds per policy: " + "; ".join(parts) + "; each comparison pairs the seeds both policies ran"


def paired_rows(
    ref: str,
    baselines: list[str],
    summary: dict[tuple[str, float], dict[int, tuple[int, bool]]],
    runs: dict[str, dict[int, dict]],
    budget: int,
    fractions: tuple[float, ...] = FRACTIONS,
    levels: dict[str, float] | None = None,
) -> list[dict]:
    """``ref`` against each policy of ``baselines``, paired on the seeds both ran: one dict per baseline with
    ``base``, ``n``, ``level``, ``targets`` (per target of ``fractions``, by default all of ``FRACTIONS``: the
    relative reduction of the restricted mean rounds as (point, lower, upper) of a paired bootstrap interval at
    ``level``, or None when neither policy reached it on any seed) and ``final`` (the difference in final accuracy,
    same form). ``level`` is ``levels[base]``, 95% for a baseline not in ``levels`` (:func:`pair_level`). Each
    interval is drawn on its own, so asking for fewer targets changes none of them. A baseline without runs or
    without a seed in common has no row."""
    rows = []
    for base in baselines:
        level = (levels or {}).get(base, LEVEL)
        seeds = sorted(set(runs.get(ref, {})) & set(runs.get(base, {})))
        if not seeds:
            continue  # no seed in common: nothing to pair
        final_ref = np.array([stats.final_accuracy(runs[ref][s]["accuracy"]) for s in seeds])
        targets: list[tuple[float, float, float] | None] = []
        for f in fractions:
            ta, ea = (np.array(v) for v in zip(*(summary[(ref, f)][s] for s in seeds)))
            tb, eb = (np.array(v) for v in zip(*(summary[(base, f)][s] for s in seeds)))

            def reduction(idx, ta=ta, ea=ea, tb=tb, eb=eb):
                return stats.relative_reduction(ta[idx], ea[idx], tb[idx], eb[idx], budget)

            # Both arms censored at the budget on every seed: the restricted means are equal by construction, and
            # a "0%" would read as a measured tie.
            estimable = ea.any() or eb.any()
            targets.append(stats.paired_bootstrap(reduction, len(seeds), level=level) if estimable else None)
        final_base = np.array([stats.final_accuracy(runs[base][s]["accuracy"]) for s in seeds])

        def gain(idx, a=final_ref, b=final_base):
            return float(np.mean(a[idx] - b[idx]))

        final = stats.paired_bootstrap(gain, len(seeds), level=level)
        rows.append({"base": base, "n": len(seeds), "level": level, "targets": targets, "final": final})
    return rows


def budget_ceiling(
    refs: list[str], summary: dict[tuple[str, float], dict[int, tuple[int, bool]]], budget: int
) -> list[str]:
    """Markdown lines: for each policy of ``refs``, the largest reduction of its rounds to each target that any
    baseline can show within ``budget`` rounds, ``1 - RMST(ref) / budget`` over the policy's seeds.

    A restricted mean never exceeds the budget, so a baseline censored at the budget on every seed gives exactly
    this reduction and no baseline gives more: a reduction ``r`` above it cannot be shown at this budget, however
    slow the baseline, only with a longer budget (at least ``RMST(ref) / (1 - r)`` rounds) or a faster ``ref``. No
    refs, no lines.
    """
    if not refs:
        return []
    lines = table_head(
        "The most a reduction can show at this budget",
        f"Largest reduction of rounds to target that a baseline can show against each policy within {budget} rounds: "
        f"1 - RMST / {budget} over the policy's seeds (what a baseline that misses the target on every seed gives):",
        ["policy", "seeds (n)", *TARGET_COLUMNS],
    )
    for ref in refs:
        cells = []
        for f in FRACTIONS:
            hits = summary[(ref, f)]
            times, events = [h[0] for h in hits.values()], [h[1] for h in hits.values()]
            cells.append(f"{1.0 - stats.restricted_mean(times, events, budget) / budget:.0%}")
        lines.append(f"| {ref} | {len(summary[(ref, FRACTIONS[0])])} | " + " | ".join(cells) + " |")
    return lines


def reduction_table(ref: str, rows: list[dict], title: str | None = None) -> list[str]:
    """Markdown lines: ``ref`` against each baseline of :func:`paired_rows`' ``rows``: rounds to each target and
    final accuracy, each row over the seeds both policies ran (its ``n``). No rows, no lines: an empty table would
    say nothing."""
    if not rows:
        return []
    widened = [row for row in rows if row.get("level", LEVEL) != LEVEL]
    # the rows read at a widened level are named in the sentence above the table, so that no cell changes form
    extra = "".join(
        f"; {level:.1%} for " + ", ".join(f"`{row['base']}`" for row in widened if row["level"] == level)
        for level in sorted({row["level"] for row in widened})
    )
    if widened:
        extra += (
            ": seeds were added to these comparisons after their first intervals had been read, so the intervals on "
            "all seeds are a second look, read at a level widened for it (Bonferroni over the looks)"
        )
    lines = table_head(
        title or f"`{ref}` against each baseline",
        "Relative reduction of the restricted mean rounds to target, and the difference in final accuracy "
        f"(paired bootstrap 95% interval over the n seeds both ran, 2000 resamples{extra}):",
        ["baseline", "n", *TARGET_COLUMNS, "final accuracy"],
    )
    for row in rows:
        cells = [
            "not estimable (neither reached it)" if t is None else f"{t[0]:+.0%} [{t[1]:+.0%}, {t[2]:+.0%}]"
            for t in row["targets"]
        ]
        point, lo, hi = row["final"]
        cells.append(f"{point:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {row['base']} | {row['n']} | " + " | ".join(cells) + " |")
    return lines


def seed_by_seed(
    ref: str,
    baselines: list[str],
    summary: dict[tuple[str, float], dict[int, tuple[int, bool]]],
    runs: dict[str, dict[int, dict]],
) -> list[str]:
    """Markdown lines: on how many of the seeds both ran each policy of ``baselines`` reaches each target sooner
    than ``ref``, at the same round, or later. A run that misses a target counts at the budget (censored), so two
    runs that both miss it count as the same round; one that misses it is later than one that reaches it."""
    lines = table_head(
        f"`{ref}` against each policy, seed by seed",
        f"Seeds on which the policy reaches the target sooner than `{ref}` / at the same round / later (a run that "
        "misses the target counts at the budget):",
        ["policy", "n", *TARGET_COLUMNS],
    )
    for base in baselines:
        seeds = sorted(set(runs.get(ref, {})) & set(runs.get(base, {})))
        cells = []
        for f in FRACTIONS:
            # (round, missed): a run that misses counts at the budget, after one that reaches the target there
            key = {p: [(summary[(p, f)][s][0], not summary[(p, f)][s][1]) for s in seeds] for p in (ref, base)}
            sooner = sum(b < a for a, b in zip(key[ref], key[base]))
            same = sum(b == a for a, b in zip(key[ref], key[base]))
            cells.append(f"{sooner} / {same} / {len(seeds) - sooner - same}")
        lines.append(f"| {base} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def draw_columns(
    group: tuple[str, ...],
    summary: dict[tuple[str, float], dict[int, tuple[int, bool]]],
    runs: dict[str, dict[int, dict]],
) -> tuple[list[int], list[tuple[np.ndarray, np.ndarray]]]:
    """The seeds every run of ``group`` ran and, per target and then for final accuracy, (values, missed) of shape
    (seeds, runs): rounds to the target (a miss at the budget, ``missed`` True), then final accuracy."""
    seeds = sorted(set.intersection(*(set(runs.get(p, {})) for p in group)))
    columns = []
    for f in FRACTIONS:
        hits = np.array([[summary[(p, f)][s] for p in group] for s in seeds], dtype=float).reshape(
            len(seeds), len(group), 2
        )
        columns.append((hits[..., 0], hits[..., 1] == 0))
    finals = np.array([[stats.final_accuracy(runs[p][s]["accuracy"]) for p in group] for s in seeds], dtype=float)
    columns.append((finals.reshape(len(seeds), len(group)), np.zeros((len(seeds), len(group)), dtype=bool)))
    return seeds, columns


def draws(
    ref: str,
    group: tuple[str, ...],
    summary: dict[tuple[str, float], dict[int, tuple[int, bool]]],
    runs: dict[str, dict[int, dict]],
) -> list[str]:
    """Markdown lines: are the draws of ``DRAWS[ref]`` told apart? Over the seeds every draw ran (none unless every
    draw ran two or more), each draw's mean rank within a seed at each target (1 = soonest; a run that misses
    counts at the budget, after one that reaches it) and in final accuracy (1 = highest); Friedman's statistic with
    its permutation p-value (``stats.rank_test``); and the mean over seeds of the range from a seed's soonest draw to
    its slowest (a missed target counted at the budget), or from its lowest final accuracy to its highest."""
    seeds, columns = draw_columns(group, summary, runs)
    if len(seeds) < 2:
        return []
    lines = table_head(
        f"Draws of `{ref}`'s scores",
        "Runs that differ only in which tied optimum the solver returns, over the n seeds all ran: each draw's mean "
        "rank within a seed (1 = soonest to the target, or highest final accuracy; a run that misses the target "
        "counts at the budget, after one that reaches it), the rank test of whether the draws differ (Friedman's "
        "statistic Q, permutation p-value over 10000 relabellings), and the mean over seeds of the range between a "
        "seed's draws:",
        ["draw", "n", *TARGET_COLUMNS, "final accuracy"],
    )
    finals = columns[-1][0]
    # smaller is better for the test: final accuracy negated
    tests = [stats.rank_test(values, missed) for values, missed in columns[:-1]]
    tests.append(stats.rank_test(-finals))
    for j, policy in enumerate(group):
        lines.append(f"| {policy} | {len(seeds)} | " + " | ".join(f"{ranks[j]:.2f}" for _, _, ranks in tests) + " |")
    cells = [
        f"Q = {q:.2f}, p = {p_value:.3f}" if not missed.all() else "no draw reached it"
        for (_, missed), (q, p_value, _) in zip(columns, tests)
    ]
    lines.append(f"| rank test | {len(seeds)} | " + " | ".join(cells) + " |")
    spans = [
        f"{np.mean(np.ptp(values, axis=1)):.1f} rounds" if not missed.all() else "-" for values, missed in columns[:-1]
    ]
    spans.append(f"{np.mean(np.ptp(finals, axis=1)):.3f}")
    lines.append(f"| range within a seed | {len(seeds)} | " + " | ".join(spans) + " |")
    return lines


def plot_draws(
    summary: dict[tuple[str, float], dict[int, tuple[int, bool]]],
    runs: dict[str, dict[int, dict]],
    path: Path,
) -> Path | None:
    """Each seed's draws of every ``DRAWS`` group that :func:`draws` tables: a row of panels per group, one per
    target (rounds to it, a miss hollow at the budget) and one for final accuracy. None when no group has two
    seeds."""
    panels = {}
    for ref, group in DRAWS.items():
        seeds, columns = draw_columns(group, summary, runs)
        if len(seeds) < 2:
            continue
        names = [*(f"rounds to {c}" for c in TARGET_COLUMNS), "final accuracy"]
        for name, (values, missed) in zip(names, columns):
            panels[f"{ref}: {name}"] = (seeds, {p: (values[:, j], missed[:, j]) for j, p in enumerate(group)})
    if not panels:
        return None
    return plots.plot_draws(
        panels,
        path,
        columns=len(FRACTIONS) + 1,
        title="Draws of one aligner's scores, seed by seed (grey: a seed's range; hollow: target missed)",
    )


def plot_pairs(ref: str, rows: list[dict], path: Path) -> Path | None:
    """A forest plot of :func:`paired_rows`: a panel per target that some row can estimate and one for final
    accuracy; right of 0 is ``ref`` ahead (fewer rounds, higher accuracy). None when there are no rows."""
    if not rows:
        return None
    panels = {
        f"{int(f * 100)}% target: fewer rounds (relative)": [r["targets"][i] for r in rows]
        for i, f in enumerate(FRACTIONS)
        if any(r["targets"][i] is not None for r in rows)
    }
    percent = [True] * len(panels)  # relative reductions; the final-accuracy difference is in accuracy units
    panels["final accuracy: difference"] = [r["final"] for r in rows]
    # a comparison read again after seeds were added is drawn at its widened level, named beside its n
    labels = [
        f"{r['base']} (n={r['n']})" if r.get("level", LEVEL) == LEVEL else f"{r['base']} (n={r['n']}, {r['level']:.1%})"
        for r in rows
    ]
    return plots.plot_intervals(
        panels,
        labels,
        path,
        percent=[*percent, False],
        title=f"{ref} against each policy: paired bootstrap 95% intervals"
        + (" unless named" if any(r.get("level", LEVEL) != LEVEL for r in rows) else "")
        + " (blue: the interval excludes 0)",
    )


def plot_curves(runs: dict[str, dict[int, dict]], reference: float, path: Path) -> Path:
    """Test accuracy against rounds per policy: mean over its seeds, band from min to max; the targets dotted.

    Left, the baselines with the two aligners; right (when there are any), ``aligned_value`` and the
    FLEX-MoE-style policy with their variants, top-k by affinity for reference. Ablations (``ABLATION``) are left
    out: their paired intervals are drawn by :func:`plot_pairs`.
    """

    def curves(names):
        return {f"{p} (n={len(runs[p])})": np.array([runs[p][s]["accuracy"] for s in sorted(runs[p])]) for p in names}

    variants = [p for p in runs if p.startswith(VARIANT_PREFIXES)]
    main = [p for p in runs if p not in variants]
    variants = [p for p in variants if not ABLATION.search(p)]
    panels = {}
    if main:  # a run of variants alone (one process of a split run) has no baseline panel to draw
        panels["baselines and aligners (targets: 70/80/90% of central)"] = curves(main)
    if variants:
        right = [p for p in ("aligned_value", "flex_moe", "topk_affinity") if p in runs] + variants
        panels["variants"] = curves(right)
    # ten to twenty curves a panel: a legend inside the axes would cover the early rounds, where they differ most
    return plots.plot_accuracy_panels(panels, path, targets=[f * reference for f in FRACTIONS], legend_loc="below")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*sorted(tasks.TASKS), "smoke"], default="multidomain")
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds to run")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="the first of the seeds run (seeds first-seed .. first-seed + seeds - 1): adds later seeds to one "
        "policy without running the earlier ones",
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 6 rounds")
    parser.add_argument(
        "--policies", default=",".join(POLICIES), help=f"comma-separated subset of {','.join(POLICIES)}"
    )
    parser.add_argument(
        "--shard", default="0/1", help="K/M: run only the seeds s with s %% M == K (M processes share a task)"
    )
    parser.add_argument("--render", action="store_true", help="only render the saved runs")
    parser.add_argument(
        "--version",
        help="with --render: an earlier definition of the task whose runs are kept as a record "
        "(federated_<task>-<version>.md); default: today's, fedloop.tasks.version",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds = min(args.seeds, 2), min(args.rounds, 6)
    policies = tuple(p for p in args.policies.split(",") if p)
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown or not policies:
        parser.error(f"--policies: must name some of {', '.join(POLICIES)}; got {args.policies!r}")
    try:
        k, m = parse_shard(args.shard)
    except ValueError as err:
        parser.error(str(err))
    if args.seeds < 1:
        parser.error(f"--seeds: must be an integer >= 1; got {args.seeds}")
    if args.first_seed < 0:
        parser.error(f"--first-seed: must be an integer >= 0; got {args.first_seed}")
    if args.version is not None and not args.render:
        parser.error(f"--version: only with --render (runs always use today's definition); got {args.version!r}")
    if args.version is not None and re.fullmatch(r"v[0-9]+", args.version) is None:
        parser.error(f"--version: must be v followed by digits, as in fedloop.tasks.VERSION; got {args.version!r}")
    if not args.render:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        run_all(args.task, [s for s in seeds if s % m == k], args.rounds, args.quick, args.out, policies)
    command = " ".join(["python benchmarks/run_federated.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"written {render(args.task, args.out, command, args.version)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
