"""Start a training run on several processes through torch's elastic launcher (what ``torchrun`` runs).

``ganrt train ... --nproc-per-node N`` calls ``launch(Launch(...), args)``: the same as
``torchrun [launcher options] -m ganrt.train args`` -- N worker processes per machine, each running
``python -m ganrt.train`` with the command line the user gave minus the launcher options. One machine gets a
standalone rendezvous on a free local port; several machines meet at ``--rdzv-endpoint`` (c10d rendezvous,
elastic: node ranks are assigned as machines arrive), or, with ``--node-rank``, at a fixed master address
(static rendezvous). ``--max-restarts`` lets the agent restart the whole group after a process fails; the
restarted processes resume from the run's last checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ganrt.errors import ConfigError, LaunchError


@dataclass(frozen=True)
class Launch:
    nproc_per_node: int = 1
    nnodes: str = "1"  # "N" or an elastic range "MIN:MAX"
    node_rank: int | None = None  # static rendezvous: this machine's rank
    rdzv_endpoint: str | None = None  # HOST:PORT every machine reaches
    rdzv_id: str = "ganrt"  # the job's name at the rendezvous (the same on every machine)
    max_restarts: int = 0

    @property
    def multi_node(self) -> bool:
        return self.nnodes.split(":")[-1] != "1"

    @property
    def wanted(self) -> bool:
        """Whether this command line asks for the launcher (else the run trains in this process)."""
        return self.nproc_per_node > 1 or self.multi_node or self.max_restarts > 0

    def validate(self) -> None:
        parts = self.nnodes.split(":")
        if not (1 <= len(parts) <= 2 and all(p.isdigit() and int(p) >= 1 for p in parts)
                and int(parts[0]) <= int(parts[-1])):
            raise ConfigError(f"--nnodes must be a number of machines N >= 1 or a range MIN:MAX, got {self.nnodes!r}")
        if self.multi_node and not self.rdzv_endpoint:
            raise ConfigError("several machines (--nnodes > 1) need --rdzv-endpoint HOST:PORT, an address of one of "
                              "them that all can reach")
        if self.rdzv_endpoint and not _is_endpoint(self.rdzv_endpoint):
            raise ConfigError(f"--rdzv-endpoint must be HOST:PORT, got {self.rdzv_endpoint!r}")
        if self.node_rank is not None and ":" in self.nnodes:
            raise ConfigError("--node-rank fixes the number of machines: give --nnodes N, not a range")
        if self.node_rank is not None and self.node_rank >= int(self.nnodes.split(":")[-1]):
            raise ConfigError(f"--node-rank {self.node_rank} must be below --nnodes {self.nnodes}")

    def torchrun_args(self, worker_args: list[str]) -> list[str]:
        """The ``torchrun`` command line (without the program name) that runs ``ganrt.train worker_args``."""
        args = ["--nproc-per-node", str(self.nproc_per_node), "--max-restarts", str(self.max_restarts)]
        if not self.multi_node and not self.rdzv_endpoint:
            args += ["--standalone"]
        elif self.node_rank is not None:
            args += ["--nnodes", self.nnodes, "--node-rank", str(self.node_rank), "--rdzv-backend", "static",
                     "--rdzv-endpoint", str(self.rdzv_endpoint)]
        else:
            args += ["--nnodes", self.nnodes, "--rdzv-backend", "c10d", "--rdzv-endpoint", str(self.rdzv_endpoint),
                     "--rdzv-id", self.rdzv_id]
        return [*args, "-m", "ganrt.train", *worker_args]


def _is_endpoint(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def launch(spec: Launch, worker_args: list[str]) -> None:
    """Run the workers to the end; a LaunchError when they failed (after ``max_restarts`` restarts)."""
    spec.validate()
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torch 2.13's c10d rendezvous shares one TCPStore across restarts, so restarted workers can read the
    # previous attempt's addresses and fail to connect (pytorch/pytorch#135712, #167288): a store per attempt
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    try:
        run(parse_args(spec.torchrun_args(worker_args)))
    except ChildFailedError as e:
        failed = ", ".join(f"rank {rank} (exit code {f.exitcode})" for rank, f in sorted(e.failures.items()))
        restarts = f" and {spec.max_restarts} restart(s)" if spec.max_restarts else ""
        raise LaunchError(f"training failed on {failed} after {spec.nproc_per_node} process(es) per machine"
                          f"{restarts}; the processes' own errors are printed above") from None
