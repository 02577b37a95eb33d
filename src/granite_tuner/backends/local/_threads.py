"""How many threads torch uses on the CPU: set when a `LocalClient` opens, never at import.

torch picks its intra-op thread count from the machine: one per physical core of the whole
machine. A process that may use fewer cores (a container's CPU set, `taskset`) then runs more
threads than it has cores, and every matrix product waits on threads that cannot run. So when a
client on the CPU opens, the count is lowered to the cores this process may use, under this rule:

- `OMP_NUM_THREADS` or `MKL_NUM_THREADS` set in the environment: left alone (torch read it);
- a count at or below the usable cores: left alone: it is the user's own
  `torch.set_num_threads(...)`, or torch's one thread per physical core, which is what a matrix
  product wants anyway;
- a count above the usable cores: lowered to them. To keep a higher count, set
  `OMP_NUM_THREADS`.

Importing the package changes nothing; a GPU client changes nothing.
"""

from __future__ import annotations

import os

import torch

__all__ = ["THREAD_ENV_VARS", "fit_torch_threads", "usable_cores"]

#: Environment variables through which the user has told torch (and OpenMP, MKL) what to use.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity), or all of them where not known."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_torch_threads(device: torch.device) -> None:
    """Lower torch's intra-op thread count to the usable cores, by the rule above."""
    if device.type != "cpu" or any(os.environ.get(name) for name in THREAD_ENV_VARS):
        return
    cores = usable_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
