"""Data order that can be resumed mid-epoch, sharded across ranks, with per-sample augmentation seeds.

A run killed mid-epoch and resumed from its checkpoint sees exactly the batches the uninterrupted run
would have seen, with exactly the same random augmentations, because nothing random depends on process
state that a restart loses:

* :class:`ResumableSampler` draws epoch ``e``'s order from a generator seeded with ``(seed, e)`` alone, gives
  each rank its shard, and can start an epoch part-way through (``start_at``). Each index comes paired with
  a sample seed derived from ``(seed, epoch, index)``.
* :class:`SeededSamples` applies a dataset's random transforms under that sample seed (torch's global
  generator is forked for the call), so worker processes, their number and their RNG state do not matter.
* :class:`ResumableDataLoader` is a ``DataLoader`` with ``state_dict`` / ``load_state_dict`` (the interface
  Lightning saves in checkpoints and restores before the first batch): the state is the epoch and the number
  of batches already trained in it, read from the trainer when the checkpoint is written.

:class:`AspectRatioGroupedSampler` is a :class:`ResumableSampler` whose batches hold images of one orientation
(``data.aspect_ratio_grouping``); see its docstring.

:class:`ShardedSampler` splits a validation set across ranks without padding, so that every image is
evaluated exactly once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "AspectRatioGroupedSampler",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededSamples",
    "ShardedSampler",
    "ignore_stop_signals",
    "orientation_groups",
    "resumable_train_loader",
    "sharded_val_loader",
    "sample_seed",
]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded with ``seed`` (63-bit)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


class ResumableSampler(Sampler[tuple[int, int]]):
    """Shuffled (or ordered) indices of one rank, per epoch, resumable part-way through an epoch.

    Epoch ``e``'s global order is a permutation drawn from ``torch.Generator().manual_seed(seed + e)``
    (``shuffle=True``) or ``0..N-1``; it is padded by repeating its head to a multiple of ``world_size``
    (as ``DistributedSampler`` does, so every rank runs the same number of steps) and rank ``r`` takes
    positions ``r, r + world_size, ...``. Yields ``(index, sample_seed(seed, epoch, index))``.

    Args:
        num_samples: dataset length.
        seed: run seed.
        shuffle: permute per epoch.
        rank, world_size: this process's shard.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if num_samples < 1:
            raise ValueError(f"cannot sample from an empty dataset (num_samples={num_samples})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self._start = 0

    def __len__(self) -> int:
        """Samples of this rank in a whole epoch (a resumed epoch yields fewer, its length stays the same)."""
        return -(-self.num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from now on (a pending ``start_at`` of the same epoch is kept)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._start = 0

    def start_at(self, epoch: int, position: int) -> None:
        """Make the next iteration yield epoch ``epoch`` from this rank's ``position``-th sample on."""
        self.epoch = int(epoch)
        self._start = int(position)

    def epoch_order(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s order of all indices (every rank's), before padding and sharding."""
        if self.shuffle:
            return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        return list(range(self.num_samples))

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's whole index list of ``epoch``."""
        order = self.epoch_order(epoch)
        total = len(self) * self.world_size
        order += (order * (total // len(order) + 1))[: total - len(order)]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.epoch_indices(self.epoch)[self._start :]
        epoch, self._start = self.epoch, 0
        return iter([(index, sample_seed(self.seed, epoch, index)) for index in indices])


class ShardedSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``0..num_samples-1``: each index on exactly one rank, no
    padding (ranks may differ by one sample)."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1):
        self.num_samples, self.rank, self.world_size = int(num_samples), int(rank), int(world_size)

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.world_size))


def orientation_groups(widths: Sequence[int] | np.ndarray, heights: Sequence[int] | np.ndarray) -> np.ndarray:
    """Group id of each image: 0 for landscape (wider than tall), 1 otherwise (detectron2's grouping)."""
    return np.where(np.asarray(widths) > np.asarray(heights), 0, 1).astype(np.int64)


class AspectRatioGroupedSampler(ResumableSampler):
    """:class:`ResumableSampler` whose consecutive ``batch_size`` indices share a group: training batches of
    images of one orientation, exact under DDP and resumable.

    A batch is padded to its largest image, so a batch that mixes landscape and portrait images computes on a
    mostly empty square. detectron2's default (``AspectRatioGroupedDataset``) and torchvision's
    ``GroupedBatchSampler`` group the images by orientation; both form batches from whatever order the workers
    deliver, so the batches depend on timing. Here the batches are a function of ``(seed, epoch)`` alone:

    1. epoch ``e``'s order is the permutation :class:`ResumableSampler` draws;
    2. walking it, each image joins its group's open batch, and a batch is closed when it holds ``batch_size``
       images (so batches come in the order they fill, mixing the groups over the epoch);
    3. each group's last, partial batch is completed with the group's first images of the epoch;
    4. the batch list is padded to a multiple of ``world_size`` by repeating its first batches, and rank ``r``
       takes batches ``r, r + world_size, ...``.

    Every image is in at least one batch of every epoch, each batch holds one group only, the ranks get disjoint
    batches (apart from the few repeated to complete batches and to equalise the ranks) and the same number of
    them. The sampler yields the rank's batches flattened, index by index, so a ``DataLoader`` with the same
    ``batch_size`` cuts exactly these batches, and a run resumed at batch ``k`` of an epoch
    (:meth:`ResumableSampler.start_at` with position ``k * batch_size``) continues the same order.

    Args:
        group_ids: group of each dataset index (e.g. :func:`orientation_groups`).
        batch_size: images per batch and rank (the ``DataLoader``'s ``batch_size``).
        seed, rank, world_size: as for :class:`ResumableSampler` (always shuffled).
    """

    def __init__(
        self, group_ids: Sequence[int] | np.ndarray, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        super().__init__(len(group_ids), seed=seed, shuffle=True, rank=rank, world_size=world_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size = int(batch_size)
        sizes = np.unique(self.group_ids, return_counts=True)[1]
        batches = int(sum(-(-int(n) // self.batch_size) for n in sizes))
        self._batches_per_rank = -(-batches // self.world_size)

    def __len__(self) -> int:
        """Indices of this rank in a whole epoch: its batches times ``batch_size``."""
        return self._batches_per_rank * self.batch_size

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All ranks' batches of ``epoch``, in order (before sharding)."""
        order = super().epoch_order(epoch)
        groups = self.group_ids[order].tolist()
        open_batches: dict[int, list[int]] = {}
        first_of_group: dict[int, list[int]] = {}
        batches: list[list[int]] = []
        for index, group in zip(order, groups):
            head = first_of_group.setdefault(group, [])
            if len(head) < self.batch_size:
                head.append(index)
            batch = open_batches.setdefault(group, [])
            batch.append(index)
            if len(batch) == self.batch_size:
                batches.append(batch)
                open_batches[group] = []
        for group in sorted(open_batches):
            batch = open_batches[group]
            if batch:
                head = first_of_group[group]
                batches.append(batch + (head * self.batch_size)[: self.batch_size - len(batch)])
        total = self._batches_per_rank * self.world_size
        return batches + (batches * (total // len(batches) + 1))[: total - len(batches)]

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's batches of ``epoch``, flattened."""
        return [index for batch in self.epoch_batches(epoch)[self.rank :: self.world_size] for index in batch]


class SeededSamples(Dataset):
    """``dataset[index]`` computed under a fixed seed: ``SeededSamples(ds)[(index, seed)]``.

    torch's global generator (what torchvision's v2 transforms draw from) is forked and seeded with ``seed``
    for the call, so the sample's augmentation depends on ``seed`` alone and the caller's generator is left
    as it was.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` whose position survives a checkpoint.

    Args:
        dataset: a :class:`SeededSamples` (or anything indexed by ``(index, seed)``).
        sampler: the :class:`ResumableSampler`.
        progress: returns ``(epoch, batches already trained in it)`` at checkpoint time (the data module
            reads them from the trainer).
        **kwargs: other ``DataLoader`` arguments (``batch_size``, ``num_workers``, ``collate_fn``, ...).

    ``state_dict()`` -> ``{"epoch", "batches_done", "batch_size"}``; ``load_state_dict`` sets the sampler to
    continue from there (the next epoch when the saved one was complete).
    """

    def __init__(
        self, dataset: Dataset, sampler: ResumableSampler, progress: Callable[[], tuple[int, int]], **kwargs: Any
    ):
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        """Where training stands in the data: epoch and batches trained in it."""
        epoch, batches_done = self.progress()
        return {"epoch": int(epoch), "batches_done": int(batches_done), "batch_size": int(self.batch_size or 1)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict`: skip the batches already trained in that epoch."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        if int(state.get("batch_size", self.batch_size or 1)) != (self.batch_size or 1):
            raise ValueError(
                f"the checkpoint was trained with {state['batch_size']} images per device and step, this run uses "
                f"{self.batch_size}: the data position cannot be restored; resume with the same data.batch_size"
            )
        batches_done = int(state["batches_done"])
        if batches_done >= len(self):  # the saved epoch was complete
            sampler.start_at(int(state["epoch"]) + 1, 0)
        else:
            sampler.start_at(int(state["epoch"]), batches_done * (self.batch_size or 1))


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of our loaders: the workers ignore SIGTERM and SIGINT.

    ``timeout``, schedulers and container runtimes signal the whole process group. A worker that died on
    the signal would crash the main process before it could finish its step and write the checkpoint;
    the main process coordinates the stop and ends its workers itself (and a worker whose parent is gone
    exits on its own).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _with_worker_init(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with :func:`ignore_stop_signals` run in each worker (before a caller's own ``worker_init_fn``)."""
    own = kwargs.get("worker_init_fn")
    if own is None:
        return {**kwargs, "worker_init_fn": ignore_stop_signals}

    def init(worker_id: int) -> None:
        ignore_stop_signals(worker_id)
        own(worker_id)

    return {**kwargs, "worker_init_fn": init}


def _rank_and_world(trainer: Any) -> tuple[int, int]:
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


def _training_progress(trainer: Any) -> Callable[[], tuple[int, int]]:
    def progress() -> tuple[int, int]:
        if trainer is None:
            return 0, 0
        return int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    return progress


def resumable_train_loader(
    dataset: Dataset, trainer: Any, seed: int, batch_size: int, group_ids: Any = None, **kwargs: Any
) -> ResumableDataLoader:
    """The training loader of a Lightning data module: shuffled per epoch from ``seed``, this rank's shard of
    ``dataset`` (``trainer``: the attached trainer, or None outside a fit), resumable mid-epoch. With
    ``group_ids`` (one per image, e.g. its orientation) each batch holds images of one group
    (:class:`AspectRatioGroupedSampler`)."""
    rank, world = _rank_and_world(trainer)
    if group_ids is not None:
        sampler: ResumableSampler = AspectRatioGroupedSampler(group_ids, batch_size, seed, rank, world)
    else:
        sampler = ResumableSampler(len(dataset), seed=seed, shuffle=True, rank=rank, world_size=world)  # type: ignore[arg-type]
    return ResumableDataLoader(
        SeededSamples(dataset), sampler, _training_progress(trainer), batch_size=batch_size, **_with_worker_init(kwargs)
    )


def sharded_val_loader(dataset: Dataset, trainer: Any, batch_size: int, **kwargs: Any) -> DataLoader:
    """A validation loader over this rank's unpadded shard of ``dataset`` (every sample on exactly one rank)."""
    rank, world = _rank_and_world(trainer)
    sampler = ShardedSampler(len(dataset), rank, world)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **_with_worker_init(kwargs))  # type: ignore[arg-type]
