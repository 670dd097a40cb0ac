"""Random numbers of a training step, drawn for the global batch and sliced per rank.

Each rank draws the noise of the whole global batch (``world size x`` its own batch) from the run's seeded
``torch.Generator`` and keeps the rows of its own images. So the latents, labels, DiffAugment parameters
and gradient-penalty mixing of image ``i`` of step ``s`` do not depend on how many processes share the
batch: 2 ranks x batch b draw exactly what 1 rank x batch 2b draws, every rank's generator stays in the same
state (saving rank 0's is enough to resume), and a run resumed on another number of processes continues
the same streams. The cost is drawing ``world size`` times the noise each rank uses, which is small next to
a forward pass. In a one-process run the draws are exactly ``torch.rand(shape, generator=...)`` & co.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class BatchNoise:
    """Draws whose first dimension is the batch; ``rank``'s slice of a ``world``-times larger draw."""

    def __init__(self, generator: torch.Generator | None, rank: int = 0, world: int = 1) -> None:
        self.generator = generator
        self.rank = rank
        self.world = world

    def _mine(self, x: torch.Tensor, b: int) -> torch.Tensor:
        return x if self.world == 1 else x[self.rank * b:(self.rank + 1) * b]

    def _global(self, shape: Sequence[int]) -> tuple[int, ...]:
        return (shape[0] * self.world, *shape[1:])

    def rand(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype = torch.float32
             ) -> torch.Tensor:
        return self._mine(torch.rand(self._global(shape), generator=self.generator, device=device, dtype=dtype),
                          shape[0])

    def randn(self, shape: Sequence[int], device: torch.device | str, dtype: torch.dtype = torch.float32
              ) -> torch.Tensor:
        return self._mine(torch.randn(self._global(shape), generator=self.generator, device=device, dtype=dtype),
                          shape[0])

    def randint(self, low: int, high: int, shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
        return self._mine(torch.randint(low, high, self._global(shape), generator=self.generator, device=device),
                          shape[0])


def as_batch_noise(source: BatchNoise | torch.Generator | None) -> BatchNoise:
    """A ``BatchNoise`` for functions that take either (a plain generator draws for one process)."""
    return source if isinstance(source, BatchNoise) else BatchNoise(source)
