"""The batches of a run, step by step: which images step ``s`` trains on, and how they reach the device.

``BatchOrder``: the global batch of step ``s`` from (seed, s) alone -- epochs are seeded permutations read in
order -- so a resumed run continues the same order. With N processes each rank takes its own consecutive
``batch_size / N`` of those indices (a distributed sampler whose shards together are exactly the
one-process batch), so the data a step sees does not depend on N.

Two ways to the device, same pixels:
- ``DeviceBatches``: the decoded dataset sits on the device as uint8 and a step gathers its rows (no
  loader at all; the fast path for data that fits in memory: MNIST, .npz, small folders).
- ``LoaderBatches``: a folder decoded by a ``torch.utils.data.DataLoader`` with ``workers`` processes,
  pinned host memory and asynchronous copies on CUDA (``--data-workers``): for folders too big to decode
  up front.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ganrt.train.datasets import FolderIndex, ImageDataset
from ganrt.train.trainer import Batch
from ganrt.train.world import World


class BatchOrder:
    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n = n
        self.batch_size = batch_size
        self.seed = seed
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(self.n)
        return self._perm

    def indices(self, step: int) -> np.ndarray:
        """(batch_size,) int64: the global batch of ``step``."""
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        return np.array([self._permutation(int(p // self.n))[p % self.n] for p in pos], dtype=np.int64)

    def shard(self, step: int, world: World) -> np.ndarray:
        """This rank's consecutive share of step ``step``'s global batch."""
        per_rank = self.batch_size // world.size
        return self.indices(step)[world.rank * per_rank:(world.rank + 1) * per_rank]


def _to_model_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float32 in [-1, 1]."""
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class DeviceBatches:
    def __init__(self, data: ImageDataset, order: BatchOrder, world: World, device: torch.device, use_labels: bool,
                 channels_last: bool = False) -> None:
        self.order = order
        self.world = world
        self.device = device
        self.channels_last = channels_last
        self.images = torch.from_numpy(data.images).to(device)  # (N, H, W, C) uint8
        self.labels = torch.from_numpy(data.labels).to(device) if use_labels else None

    def batch(self, step: int) -> Batch:
        idx = torch.from_numpy(self.order.shard(step, self.world)).to(self.device)
        return Batch(images=_to_model_input(self.images[idx], self.channels_last),
                     labels=self.labels[idx] if self.labels is not None else None)

    def steps(self, start: int, stop: int) -> Iterator[Batch]:
        for step in range(start, stop):
            yield self.batch(step)


class _FolderImages(torch.utils.data.Dataset):
    def __init__(self, index: FolderIndex, use_labels: bool) -> None:
        self.index = index
        self.use_labels = use_labels

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        image = torch.from_numpy(self.index.read(i))  # (H, W, C) uint8
        label = int(self.index.labels[i]) if self.use_labels else -1
        return image, label


class _StepShards(torch.utils.data.Sampler):
    """Yields this rank's index list of each step from ``start`` to ``stop``: the DataLoader's batch_sampler."""

    def __init__(self, order: BatchOrder, world: World, start: int, stop: int) -> None:
        self.order, self.world, self.start, self.stop = order, world, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.order.shard(step, self.world).tolist()


class LoaderBatches:
    def __init__(self, index: FolderIndex, order: BatchOrder, world: World, device: torch.device, use_labels: bool,
                 workers: int, channels_last: bool = False) -> None:
        self.index = index
        self.order = order
        self.world = world
        self.device = device
        self.use_labels = use_labels
        self.workers = workers
        self.channels_last = channels_last

    def steps(self, start: int, stop: int) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            _FolderImages(self.index, self.use_labels), batch_sampler=_StepShards(self.order, self.world, start, stop),
            num_workers=self.workers, pin_memory=cuda, prefetch_factor=4 if self.workers else None,
            persistent_workers=False)
        for images, labels in loader:
            x = images.to(self.device, non_blocking=cuda)
            y = labels.to(self.device, non_blocking=cuda) if self.use_labels else None
            yield Batch(images=_to_model_input(x, self.channels_last), labels=y)
