"""Where this process sits among the processes of one training run: rank, world size, device, and the few
collective operations the loop needs (torch.distributed, launched by torchrun / ``ganrt train --nproc-per-node``).

A run started by torchrun finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``TORCHELASTIC_RESTART_COUNT`` in
its environment; without them it is one process (``World()``) and nothing here touches torch.distributed.
Backends: gloo for CPU tensors, NCCL for CUDA. Every rank holds the same weights: the model replicas are
wrapped in ``DistributedDataParallel`` (``wrap``), whose backward averages the gradients over all ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ganrt.errors import BackendUnavailable, ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    restart_count: int = 0  # how often torchrun's elastic agent has restarted the group (max_restarts)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "World":
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env or "RANK" not in env:
            return cls()
        try:
            return cls(rank=int(env["RANK"]), size=int(env["WORLD_SIZE"]), local_rank=int(env.get("LOCAL_RANK", 0)),
                       restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)))
        except ValueError:
            raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, got {env.get('RANK')!r}/"
                              f"{env.get('WORLD_SIZE')!r}/{env.get('LOCAL_RANK')!r}") from None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, samples and metrics."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The torch device of this rank: ``cuda`` means the GPU of this process's local rank."""
        if name.startswith("cuda"):
            if not torch.cuda.is_available():
                raise BackendUnavailable(f"device {name!r} was asked for, but torch sees no CUDA GPU here; "
                                         "use device='cpu' (--device cpu)")
            if self.distributed:
                if name != "cuda":
                    raise ConfigError(f"--device {name} names one GPU, but this run has {self.size} processes; give "
                                      "--device cuda and each process takes the GPU of its local rank")
                if self.local_rank >= torch.cuda.device_count():
                    raise BackendUnavailable(f"local rank {self.local_rank} has no GPU: this machine has "
                                             f"{torch.cuda.device_count()}; start at most that many processes per node")
                return torch.device("cuda", self.local_rank)
        return torch.device(name)

    # --- the process group -------------------------------------------------------------------------------------
    def start(self, device: torch.device) -> bool:
        """Join the process group (gloo on CPU, NCCL on CUDA). Returns whether this call started it."""
        if not self.distributed:
            return False
        import torch.distributed as dist

        if dist.is_initialized():
            if dist.get_world_size() != self.size:
                raise ConfigError(f"a process group of {dist.get_world_size()} processes is already running, but "
                                  f"WORLD_SIZE says {self.size}")
            return False
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        return True

    def stop(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def backend(self) -> str | None:
        if not self.distributed:
            return None
        import torch.distributed as dist

        return dist.get_backend()

    # --- what the loop shares between ranks ---------------------------------------------------------------------
    def wrap(self, module: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False
             ) -> torch.nn.Module:
        """``module`` wrapped in DistributedDataParallel (gradients averaged over ranks in backward), or
        ``module`` itself in a one-process run. Buffers are synchronized once (at wrapping), not in every
        forward: BatchNorm statistics stay per rank (or SyncBatchNorm shares them), as in most GAN code."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                       forward_sync_buffers=False, find_unused_parameters=find_unused_parameters)

    def gather(self, tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        """Every rank's copy of ``tensor`` (same shape and dtype on all ranks), as CPU tensors in rank order."""
        if not self.distributed:
            return [tensor.detach().cpu()]
        import torch.distributed as dist

        local = tensor.detach().to(device if device.type == "cuda" else "cpu")
        out = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(out, local)
        return [t.cpu() for t in out]

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """The mean of each value over all ranks (every rank passes the same keys)."""
        if not self.distributed or not values:
            return values
        import torch.distributed as dist

        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.size).tolist(), strict=True))

    def gather_ints(self, values: list[int], device: torch.device) -> list[list[int]]:
        rows = self.gather(torch.tensor(values, dtype=torch.int64), device)
        return [r.tolist() for r in rows]


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A seed for rank ``rank``'s own random stream, derived from the run's seed (and a step after a resume
    that found no saved state for this rank)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] >> 1)


def parameter_fingerprint(modules: dict[str, torch.nn.Module]) -> torch.Tensor:
    """(2 * len(modules),) float64 on the CPU: the sum and the sum of squares of each module's parameters.
    Replicas that DDP keeps in step agree exactly; a trainer that updated a module outside its DDP wrapper
    (so without averaging its gradients) does not."""
    rows = []
    with torch.no_grad():
        for mod in modules.values():
            params = [p.detach().double() for p in mod.parameters()] or [torch.zeros(1, dtype=torch.float64)]
            rows.append(torch.stack([p.sum() for p in params]).sum().cpu())
            rows.append(torch.stack([p.square().sum() for p in params]).sum().cpu())
    return torch.stack(rows)
