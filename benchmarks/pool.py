"""A pool of benchmark runs, each in a process of its own, a few at a time: what the scripts that run many federated
runs share (``run_cost.py --measure``, ``run_comparison.py``).

Each run is a command line; its standard output and error go to temporary files, not pipes, so that a run waited on
later never blocks on a full pipe. The next run starts as soon as any running one ends (not the oldest: a core must
not idle beside a longer run). When a run fails, the others still running are stopped and the error names the run.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import IO


def run_pool(
    jobs: Sequence[tuple[Hashable, Sequence[str]]],
    workers: int,
    on_done: Callable[[Hashable, str], None],
    env: Mapping[str, str] | None = None,
    poll_s: float = 0.2,
) -> None:
    """Run each ``(key, argv)`` of ``jobs`` in order, ``workers`` at a time; ``on_done(key, stdout)`` after each ends.

    Raises
    ------
    ValueError
        ``workers`` below 1.
    RuntimeError
        A run exits with a non-zero status: the message names its key and ends with its standard error; the runs
        still going are killed first (``on_done`` has been called for every run that ended before).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: must be an integer >= 1; got {workers!r}")
    running: list[tuple[subprocess.Popen, Hashable, IO[str], IO[str]]] = []

    def collect_one() -> None:
        while (k := next((k for k, entry in enumerate(running) if entry[0].poll() is not None), None)) is None:
            time.sleep(poll_s)
        proc, key, stdout, stderr = running.pop(k)
        stdout.seek(0)
        stderr.seek(0)
        text, err = stdout.read(), stderr.read()
        stdout.close()
        stderr.close()
        if proc.returncode != 0:
            raise RuntimeError(f"run {key} failed (exit {proc.returncode}): {err.strip()[-2000:]}")
        on_done(key, text)

    try:
        for key, argv in jobs:
            while len(running) >= workers:
                collect_one()
            stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            proc = subprocess.Popen(
                list(argv), stdout=stdout, stderr=stderr, text=True, env=None if env is None else dict(env)
            )
            running.append((proc, key, stdout, stderr))
        while running:
            collect_one()
    finally:
        for proc, _, stdout, stderr in running:  # after a failure: the others' results would be lost anyway
            proc.kill()
            proc.wait()
            stdout.close()
            stderr.close()
