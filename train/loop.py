"""The training loop: data order, seeding, logging, sample grids, checkpoints and exact resume.

``train(config, out_dir, resume=False) -> TrainResult``. The run directory holds ``options.json``,
``metrics.jsonl``, ``samples/step-XXXXXX.png``, ``checkpoint.safetensors`` (latest, atomically replaced),
``checkpoint.optim.safetensors`` (optimiser + RNG state for resume, committed together with the checkpoint:
``ganrt.train.state.CheckpointPair``) and ``checkpoints/step-XXXXXX.safetensors``.

Determinism: weights are initialised from ``torch.manual_seed(seed)``; the batch of step ``s`` is a pure
function of (seed, s) -- each epoch is a permutation drawn from ``PCG64([seed, epoch])`` -- and all noise
comes from a ``torch.Generator`` seeded with ``seed`` whose state is saved with every checkpoint, as is
the global torch RNG. So N steps equal N/2 steps + ``resume`` + N/2 steps, bit for bit, on the same
machine, thread count and torch version.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganrt.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from ganrt.errors import BackendUnavailable, CheckpointError, ConfigError, DataError
from ganrt.fileio import atomic_write_json, atomic_write_text
from ganrt.images import save_grid
from ganrt.latents import latents_from_seeds
from ganrt.models import get
from ganrt.postprocess import to_uint8_nhwc
from ganrt.spec import GeneratorSpec
from ganrt.train.config import RESULT_FIELDS, TrainConfig
from ganrt.train.datasets import ImageDataset, load_dataset
from ganrt.train.state import CHECKPOINT, TRAIN_STATE, CheckpointPair, load_train_state, save_train_state
from ganrt.train.trainer import Batch, Trainer, trainer_class

__all__ = ["CHECKPOINT", "TRAIN_STATE", "TrainResult", "train", "make_spec", "sample_grid"]
MAX_GRID_ROWS = 16


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    samples: Path | None  # the latest sample grid
    metrics: Path
    step: int
    start_step: int
    seconds: float
    images_per_s: float
    losses: dict[str, float] = field(default_factory=dict)  # the last logged values

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "checkpoint": str(self.checkpoint),
                "samples": str(self.samples) if self.samples else None, "metrics": str(self.metrics),
                "step": self.step, "start_step": self.start_step, "seconds": round(self.seconds, 3),
                "images_per_s": round(self.images_per_s, 2), "losses": self.losses}


class BatchSampler:
    """The batch of step ``s`` from (seed, s) alone: epochs are seeded permutations, read in order."""

    def __init__(self, data: ImageDataset, batch_size: int, seed: int, device: torch.device,
                 use_labels: bool) -> None:
        self.n = len(data)
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.images = torch.from_numpy(data.images).to(device)  # (N, H, W, C) uint8
        self.labels = torch.from_numpy(data.labels).to(device) if use_labels else None
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(self.n)
        return self._perm

    def indices(self, step: int) -> np.ndarray:
        pos = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        return np.array([self._permutation(int(p // self.n))[p % self.n] for p in pos], dtype=np.int64)

    def batch(self, step: int) -> Batch:
        idx = torch.from_numpy(self.indices(step)).to(self.device)
        x = self.images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, C, H, W) in [-1, 1]
        return Batch(images=x, labels=self.labels[idx] if self.labels is not None else None)


def make_spec(config: TrainConfig, data: ImageDataset) -> GeneratorSpec:
    """The GeneratorSpec a config trains on a dataset; validates the family's constraints."""
    family = get(config.arch)
    if config.resolution not in family.supported_resolutions:
        raise ConfigError(f"{config.arch} supports resolutions {list(family.supported_resolutions)}, "
                          f"got {config.resolution}")
    has_labels = data.labels is not None
    if config.conditional == "on" and not has_labels:
        raise ConfigError(f"conditional='on' needs labels, but dataset {data.identity.get('name')} has none; "
                          "use class subfolders, an npz 'labels' array, or conditional='auto'")
    conditional = has_labels and config.conditional != "off"
    if conditional and not family.supports_conditional:
        if config.conditional == "on":
            raise ConfigError(f"architecture {config.arch!r} has no class-conditional form; use conditional='off'")
        conditional = False
    kwargs = dict(family.default_kwargs(config.resolution))
    if config.width is not None:
        kwargs["width"] = config.width
    kwargs.update(config.arch_kwargs)
    return GeneratorSpec(arch=config.arch, latent_dim=config.latent_dim, channels=data.channels,
                         height=config.resolution, width=config.resolution,
                         num_classes=data.num_classes if conditional else 0,
                         has_truncation=family.has_truncation, arch_kwargs=kwargs)


def _device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {name!r} was asked for, but torch sees no CUDA GPU here; "
                                 "use device='cpu' (--device cpu)")
    return torch.device(name)


def _rng_states(trainer: Trainer) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state(), "trainer": trainer.rng.get_state()}
    if trainer.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(trainer.device)
    return states


def sample_grid(trainer: Trainer, columns: int) -> tuple[np.ndarray, int]:
    """(B, H, W, C) uint8 from fixed seeds 0..columns-1: one row per class when conditional (same latents
    in every row), else a square of seeds. Returns (images, images per row)."""
    spec = trainer.spec
    if spec.num_classes:
        rows = min(spec.num_classes, MAX_GRID_ROWS)
        z = np.tile(latents_from_seeds(range(columns), spec.latent_dim), (rows, 1))
        labels = torch.arange(rows, device=trainer.device).repeat_interleave(columns)
    else:
        z = latents_from_seeds(range(columns * columns), spec.latent_dim)
        labels = None
    with torch.no_grad():
        x = trainer.sample(torch.from_numpy(z).to(trainer.device), labels)
    return to_uint8_nhwc(x.float().cpu(), spec.output_range).numpy(), columns


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``config`` into the run directory ``out_dir``; with ``resume`` continue the run found there
    up to ``config.steps``."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    if resume and not ckpt_path.is_file():
        raise CheckpointError(f"cannot resume: {ckpt_path} does not exist; start the run without --resume")
    if not resume and ckpt_path.exists():
        raise ConfigError(f"{out} already holds a training run ({CHECKPOINT}); pass --resume to continue it or "
                          "choose another --out")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config.device)

    data = load_dataset(config.dataset, config.resolution, config.channels)
    spec = make_spec(config, data)
    torch.manual_seed(config.seed)
    rng = torch.Generator(device=device).manual_seed(config.seed)
    trainer = trainer_class(get(config.arch))(config, spec, device=device, rng=rng)

    start = 0
    if resume:
        start = _restore(trainer, config, spec, data, CheckpointPair(out))
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    _remove_stale_temp_files(out)
    atomic_write_json(out / "options.json", {"config": config.to_dict(), "spec": spec.to_dict(),
                                             "dataset": data.identity, "trainer": _qualname(trainer)})
    metrics = out / "metrics.jsonl"
    _truncate_metrics(metrics, start)

    sampler = BatchSampler(data, config.batch_size, config.seed, device, use_labels=spec.num_classes > 0)
    last_sample: Path | None = _latest_sample(out)
    sums: dict[str, float] = {}
    count = 0
    logged: dict[str, float] = {}
    t0 = time.perf_counter()
    t_log = t0
    bar = tqdm(total=config.steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"train {config.arch}")
    try:
        for step in range(start, config.steps):
            trainer.G.train()
            if trainer.D is not None:
                trainer.D.train()
            losses = trainer.step(sampler.batch(step), step)
            trainer.update_ema(step)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                raise ConfigError(f"training diverged at step {step + 1}: {bad}; lower --lr-g/--lr-d, or add "
                                  "--r1-gamma or --spectral-norm")
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            done = step + 1
            bar.update(1)
            final = done == config.steps
            if done % config.log_every == 0 or final:
                now = time.perf_counter()
                ips = count * config.batch_size / max(now - t_log, 1e-9)
                logged = {k: v / count for k, v in sums.items()}
                line = {"step": done, "time": round(now - t0, 3), "images_per_s": round(ips, 1),
                        **{k: round(v, 6) for k, v in logged.items()}}
                with open(metrics, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in logged.items() if k in ("d_loss", "g_loss", "loss")},
                                 "img/s": f"{ips:.0f}"})
                sums, count, t_log = {}, 0, now
            if done % config.sample_every == 0 or final:
                last_sample = _save_samples(trainer, out, done, config)
            snapshot = final or (config.snapshot_every and done % config.snapshot_every == 0)
            if done % config.checkpoint_every == 0 or final or snapshot:
                _save(trainer, config, spec, data, out, done, snapshot=bool(snapshot))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    steps_run = config.steps - start
    if steps_run <= 0 and last_sample is None:
        last_sample = _save_samples(trainer, out, start, config)
    return TrainResult(out_dir=out, checkpoint=ckpt_path, samples=last_sample, metrics=metrics,
                       step=max(config.steps, start), start_step=start, seconds=seconds,
                       images_per_s=steps_run * config.batch_size / seconds if steps_run > 0 else 0.0,
                       losses=logged)


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def _save_samples(trainer: Trainer, out: Path, step: int, config: TrainConfig) -> Path:
    images, ncol = sample_grid(trainer, config.sample_columns)
    path = out / "samples" / f"step-{step:06d}.png"
    rows = "one row per class" if trainer.spec.num_classes else "seeds row by row"
    save_grid(path, images, nrow=ncol, scale=2,
              text={"ganrt.step": str(step), "ganrt.arch": config.arch,
                    "ganrt.grid": f"EMA generator, seeds 0..{config.sample_columns - 1}, {rows}"})
    return path


def _save(trainer: Trainer, config: TrainConfig, spec: GeneratorSpec, data: ImageDataset, out: Path, step: int,
          snapshot: bool) -> None:
    tensors = {f"{prefix}.{k}": v for prefix, mod in trainer.modules().items() for k, v in mod.state_dict().items()}
    ckpt = Checkpoint(spec=spec, tensors=tensors, step=step, discriminator_config=trainer.discriminator_config(),
                      train_config=config.to_dict(), dataset=data.identity, extra={"trainer": _qualname(trainer)})
    rng = _rng_states(trainer)
    CheckpointPair(out).save(
        write_state=lambda path: save_train_state(path, step=step, optimizers=trainer.optimizers, rng=rng,
                                                  extra_state=trainer.extra_state()),
        write_checkpoint=lambda path: save_checkpoint(path, ckpt))
    if snapshot:
        save_checkpoint(out / "checkpoints" / f"step-{step:06d}.safetensors", ckpt)


def _restore(trainer: Trainer, config: TrainConfig, spec: GeneratorSpec, data: ImageDataset,
             pair: CheckpointPair) -> int:
    """Load the run's last checkpoint and its optimiser state; returns the step."""
    ckpt_path = pair.checkpoint
    ckpt = read_checkpoint(ckpt_path)
    if ckpt.spec != spec:
        raise CheckpointError(f"{ckpt_path} was trained with spec {ckpt.spec.to_json()}, but these options give "
                              f"{spec.to_json()}; resume with the run's own options")
    saved = ckpt.train_config
    changed = sorted(k for k in RESULT_FIELDS if k in saved and _norm(saved[k]) != _norm(getattr(config, k)))
    if changed:
        diffs = ", ".join(f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in changed)
        raise ConfigError(f"cannot resume {ckpt_path} with changed options ({diffs}); a resumed run must use the "
                          "options it started with (only steps and the logging/sampling intervals may change)")
    if ckpt.dataset.get("sha256") != data.identity["sha256"]:
        raise DataError(f"cannot resume {ckpt_path}: it was trained on dataset {ckpt.dataset.get('name')!r} "
                        f"(sha256 {str(ckpt.dataset.get('sha256'))[:12]}...), but {config.dataset!r} has pixel "
                        f"sha256 {data.identity['sha256'][:12]}...")
    for prefix, module in trainer.modules().items():
        state = ckpt.state_dict(prefix)
        if not state:
            raise CheckpointError(f"{ckpt_path} holds no {prefix}.* tensors; cannot resume this trainer from it")
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{ckpt_path}: {prefix} weights do not fit the model ({first})") from None
    state_path = pair.state_for(ckpt.step)
    state = load_train_state(state_path, trainer.optimizers)
    if state.step != ckpt.step:
        raise CheckpointError(f"{state_path} is from step {state.step} but {ckpt_path} from step {ckpt.step}")
    rng = state.rng
    try:
        torch.set_rng_state(rng["torch"])
        trainer.rng.set_state(rng["trainer"])
        if "cuda" in rng and trainer.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], trainer.device)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{state_path}: RNG state is missing or invalid ({e})") from None
    trainer.load_extra_state(state.extra_state)
    return ckpt.step


def _remove_stale_temp_files(out: Path) -> None:
    """Temporary files of writes a kill interrupted (ganrt.fileio names them ``.<name>.<random>.tmp``)."""
    for folder in (out, out / "samples", out / "checkpoints"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, as stored


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (from an interrupted run) so a resumed log has no duplicates."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def _latest_sample(out: Path) -> Path | None:
    found = sorted((out / "samples").glob("step-*.png"))
    return found[-1] if found else None
