import os

# One thread per process: the suite runs in two pytest workers, several of them start benchmark scripts and Flower
# processes, and torch's default of one thread per core would oversubscribe the cores (set before torch loads;
# subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
from hypothesis import HealthCheck, settings

# CI runs a fixed, derandomised set of examples so that a red run is reproducible.
settings.register_profile(
    "ci", max_examples=150, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
