"""The CPU thread pool's waiting policy, set before torch starts (torch-free: the command line calls it first).

PyTorch's CPU kernels run on an OpenMP pool (GNU libgomp in the PyPI wheels, one thread per core). Between parallel
regions, libgomp's threads spin for a while before sleeping. On a quiet machine the spin saves a wake-up; on a
shared one (other jobs, a second training, a busy laptop) a spinning thread burns the time slice its sibling
needed to finish the region everyone waits for, and a training step falls well below its fair share of the cores
(the issue measured 27 % of its quiet speed beside two busy loops on 2 cores, against a fair 50 %). libgomp reads
``OMP_WAIT_POLICY`` once, when torch loads it, so it must be in the environment before ``import torch``.
Measured in ``python -m benchmarks train --hog`` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

__all__ = ["TRAINING_COMMANDS", "USER_THREAD_VARIABLES", "configure_openmp", "openmp_environment"]

# the commands whose steps are long enough that a wake-up per parallel region costs nothing measurable; inference
# commands (predict's batch-1 latency, serve) keep libgomp's default until a quiet machine has measured them
TRAINING_COMMANDS = ("train", "finetune", "demo", "ablate")

# a user who set any of these chose their own threading; we leave it alone
USER_THREAD_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_LIBRARY")


def openmp_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to ``env`` so that OpenMP threads sleep instead of spinning while they wait: none
    when the user set any of `USER_THREAD_VARIABLES` or ALEXNET_THREAD_TUNING=0."""
    if env.get("ALEXNET_THREAD_TUNING", "1") == "0" or any(k in env for k in USER_THREAD_VARIABLES):
        return {}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_openmp(env: MutableMapping[str, str] | None = None, command: str | None = None) -> bool:
    """Apply `openmp_environment` to this process's environment (and so to its children's) when ``command`` is
    None or one of `TRAINING_COMMANDS`; True if anything was set. Only effective before torch is first imported."""
    if command is not None and command not in TRAINING_COMMANDS:
        return False
    env = os.environ if env is None else env
    extra = openmp_environment(env)
    env.update(extra)
    return bool(extra)
