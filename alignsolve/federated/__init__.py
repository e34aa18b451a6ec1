"""Federated alignment: what a federated server does each round around the assignment core.

* :mod:`.aligner` - :class:`Aligner`, the per-round loop: reports in, an assignment out;
* :mod:`.capacity` - capacity planning: device profiles and a deadline become slots or
  budgets (:func:`plan_capacity`), and trace-calibrated profiles (:func:`sample_profiles`);
* :mod:`.scoring` - :class:`FitnessScorer`, the fitness the solver maximises;
* :mod:`.monitor` - :class:`LoadMonitor`, each expert's training history;
* :mod:`.privacy` - :class:`GaussianMechanism` and :class:`RandomizedResponse`, client-side
  privacy of the reports.

Everything here is also exported from :mod:`alignsolve` itself.
"""

from __future__ import annotations
