"""What makes a run resumable exactly: a data order that can skip ahead, per-sample seeds, and a polite stop.

* The data order of an epoch is a permutation drawn from (seed, epoch); process r of N takes every N-th index, so
  the first k indices of every process together are the first k·N of the permutation, and a run stopped after any
  number of samples resumes on any world size that divides that number.
* Every sample's random augmentation is drawn from a generator seeded by (seed, epoch, index), so it does not
  depend on the number of loader workers, on the world size, or on where a run was resumed.
* SIGINT and SIGTERM set a flag that the loop reads after each step, so it can save and exit cleanly.
"""

from __future__ import annotations

import itertools
import random
import signal
import threading

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


def seed_all(seed: int) -> None:
    """Seeds torch, NumPy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` that can start ``start`` indices into this process's share of the epoch."""

    start = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class SeededSamples(Dataset):
    """Wraps a dataset so that ``dataset[i]`` runs with every random generator seeded from (seed, epoch, i).

    The caller's generator states are restored afterwards, so the training loop's own random stream (dropout) is
    not disturbed by how many samples were loaded in the main process.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample_seed = hash((self.seed, self.epoch, int(index))) & (2**63 - 1)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                # The CPU generator only: torch.manual_seed also queues a lazy seed call for every accelerator
                # backend, each recording a stack trace, which cost more than drawing the sample itself.
                torch.default_generator.manual_seed(sample_seed)
                random.seed(sample_seed)
                np.random.seed(sample_seed % 2**32)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def set_sampling_epoch(sampler: ResumableSampler, samples: SeededSamples, epoch: int, start: int) -> None:
    """Points the sampler and the per-sample seeds at ``epoch``, skipping this process's first ``start`` indices."""
    sampler.set_epoch(epoch)
    sampler.start = start
    samples.epoch = epoch


class StopSignal:
    """Within a ``with`` block, SIGINT (Ctrl-C) and SIGTERM set ``requested`` instead of killing the process.

    A second Ctrl-C raises ``KeyboardInterrupt`` at once, for a user who does not want to wait for the save.
    Outside the main thread (where handlers cannot be installed) it does nothing.
    """

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
