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

Several processes (torchrun; ``ganrt train --nproc-per-node N``): ``config.batch_size`` is the global batch,
each rank trains on its consecutive share of it (``ganrt.train.batches``) and draws its rows of the global
batch's noise (``ganrt.train.noise``); G and D are DistributedDataParallel replicas. Rank 0 alone writes the
run directory; the global torch RNG (used inside models, e.g. StyleGAN's noise inputs) is rank 0's
continuation of the one-process stream and a seed of (seed, rank) on the others, all saved for resume.
After a restart by torchrun's elastic agent (``--max-restarts``) the run resumes from its last checkpoint.
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

from ganrt.checkpoint import Checkpoint, read_checkpoint, read_metadata, save_checkpoint
from ganrt.errors import CheckpointError, ConfigError, DataError
from ganrt.fileio import atomic_write_json, atomic_write_text, remove_temp_files
from ganrt.images import save_grid
from ganrt.latents import latents_from_seeds
from ganrt.models import get
from ganrt.postprocess import to_uint8_nhwc
from ganrt.spec import GeneratorSpec
from ganrt.train.batches import BatchOrder, DeviceBatches, LoaderBatches
from ganrt.train.config import RESULT_FIELDS, TrainConfig
from ganrt.train.datasets import FolderIndex, ImageDataset, index_folder, load_dataset
from ganrt.train.state import CHECKPOINT, TRAIN_STATE, CheckpointPair, load_train_state, save_train_state
from ganrt.train.trainer import Trainer, trainer_class
from ganrt.train.world import World, parameter_fingerprint, rank_seed

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
    world_size: int = 1  # processes that trained (images_per_s counts all of them)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "checkpoint": str(self.checkpoint),
                "samples": str(self.samples) if self.samples else None, "metrics": str(self.metrics),
                "step": self.step, "start_step": self.start_step, "seconds": round(self.seconds, 3),
                "images_per_s": round(self.images_per_s, 2), "losses": self.losses, "world_size": self.world_size}


def make_spec(config: TrainConfig, data: ImageDataset | FolderIndex) -> GeneratorSpec:
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


def _rng_states(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The RNG states to save: the trainer's generator (the same on every rank) and every rank's global torch
    (and CUDA) generator, gathered to all ranks -- a collective, so every rank calls it."""
    world = trainer.world
    states = {"trainer": trainer.rng.get_state()}
    local = {"torch": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(trainer.device)
    for name, state in local.items():
        for rank, gathered in enumerate(world.gather(state, trainer.device)):
            states[name if rank == 0 else f"{name}.rank{rank}"] = gathered
    return states


def _set_rng_states(trainer: Trainer, rng: dict[str, torch.Tensor], config: TrainConfig, step: int) -> None:
    """Restore this rank's RNG states; a rank the saved run did not have (more processes now) starts a
    stream of its own seed instead."""
    rank = trainer.world.rank
    suffix = "" if rank == 0 else f".rank{rank}"
    try:
        trainer.rng.set_state(rng["trainer"])
        if f"torch{suffix}" in rng:
            torch.set_rng_state(rng[f"torch{suffix}"])
        else:
            torch.manual_seed(rank_seed(config.seed, rank, step))
        if trainer.device.type == "cuda" and f"cuda{suffix}" in rng:
            torch.cuda.set_rng_state(rng[f"cuda{suffix}"], trainer.device)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"RNG state is missing or invalid ({e})") from None


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


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          world: World | None = None) -> TrainResult:
    """Train ``config`` into the run directory ``out_dir``; with ``resume`` continue the run found there
    up to ``config.steps``. ``world`` defaults to what torchrun put in the environment (one process without)."""
    world = world or World.from_env()
    out = Path(out_dir)
    if not resume and world.restart_count > 0 and (out / CHECKPOINT).is_file():
        resume = True  # torchrun's agent restarted the group after a failure: continue from the last checkpoint
    check_run_directory(out, resume)
    check_batch_split(config.batch_size, world.size)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = world.device(config.device)
    started = world.start(device)
    try:
        return _train(config, out, resume, progress, world, device)
    finally:
        if started:
            world.stop()


def check_run_directory(out: Path, resume: bool) -> None:
    """A resumed run needs a checkpoint in ``out``; a new one needs none there."""
    if resume and not (out / CHECKPOINT).is_file():
        raise CheckpointError(f"cannot resume: {out / CHECKPOINT} does not exist; start the run without --resume")
    if not resume and (out / CHECKPOINT).exists():
        raise ConfigError(f"{out} already holds a training run ({CHECKPOINT}); pass --resume to continue it or "
                          "choose another --out")


def check_batch_split(batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise ConfigError(f"batch_size {batch_size} is the global batch and must split evenly over the "
                          f"{world_size} processes; use a multiple of {world_size}")


def _train(config: TrainConfig, out: Path, resume: bool, progress: bool, world: World,
           device: torch.device) -> TrainResult:
    from tqdm.auto import tqdm

    folder = config.data_workers > 0 and Path(config.dataset).expanduser().is_dir()
    channels = config.channels
    if channels is None and resume:
        # the run's own count: a folder of gray pictures stored as RGB reads as 1 channel in memory (its pixels)
        # and as 3 with --data-workers (its files' modes), and the two can resume each other
        channels = read_metadata(out / CHECKPOINT)["spec"]["channels"]
    data = (index_folder(config.dataset, config.resolution, channels) if folder
            else load_dataset(config.dataset, config.resolution, channels))
    spec = make_spec(config, data)
    torch.manual_seed(config.seed)
    rng = torch.Generator(device=device).manual_seed(config.seed)
    trainer = trainer_class(get(config.arch))(config, spec, device=device, rng=rng, world=world)
    if world.rank > 0:
        torch.manual_seed(rank_seed(config.seed, world.rank))  # in-model noise differs between ranks

    start, resumed_from = 0, None
    if resume:
        start, resumed_world = _restore(trainer, config, spec, data, CheckpointPair(out))
        resumed_from = {"step": start, "world_size": resumed_world}
    starts = {row[0] for row in world.gather_ints([start], device)}
    if len(starts) > 1:
        raise CheckpointError(f"the processes of this run resumed from different steps {sorted(starts)}: with several "
                              "machines, --out must be a directory every machine sees (shared storage)")
    metrics = out / "metrics.jsonl"
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        _remove_stale_temp_files(out)
        launch = {"world_size": world.size, "backend": world.backend(), "batch_per_process":
                  config.batch_size // world.size, "restarts": world.restart_count, "resumed_from": resumed_from}
        atomic_write_json(out / "options.json", {"config": config.to_dict(), "spec": spec.to_dict(),
                                                 "dataset": data.identity, "trainer": _qualname(trainer),
                                                 "launch": launch})
        _truncate_metrics(metrics, start)

    order = BatchOrder(len(data), config.batch_size, config.seed)
    use_labels = spec.num_classes > 0
    if isinstance(data, FolderIndex):
        batches = LoaderBatches(data, order, world, device, use_labels, config.data_workers, config.channels_last)
    else:
        batches = DeviceBatches(data, order, world, device, use_labels, config.channels_last)
    last_sample: Path | None = _latest_sample(out) if world.is_main else None
    sums: dict[str, float] = {}
    count, step_seconds = 0, 0.0  # since the last log line
    logged: dict[str, float] = {}
    t0 = t_step = time.perf_counter()
    bar = tqdm(total=config.steps, initial=start, disable=not (progress and world.is_main), unit="step",
               dynamic_ncols=True, desc=f"train {config.arch}" + (f" x{world.size}" if world.distributed else ""))
    try:
        for step, batch in zip(range(start, config.steps), batches.steps(start, config.steps), strict=True):
            trainer.G.train()
            if trainer.D is not None:
                trainer.D.train()
            losses = trainer.step(batch, step)
            trainer.update_ema(step)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                raise ConfigError(f"training diverged at step {step + 1}: {bad}; lower --lr-g/--lr-d, or add "
                                  "--r1-gamma or --spectral-norm")
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            done = step + 1
            now = time.perf_counter()
            step_seconds += now - t_step  # loading the batch and the step itself, not logs, samples, checkpoints
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in logged.items() if k in ("d_loss", "g_loss", "loss")},
                             "img/s": f"{config.batch_size / max(now - t_step, 1e-9):.0f}"}, refresh=False)
            bar.update(1)
            final = done == config.steps
            if done % config.log_every == 0 or final:
                logged = world.mean({k: v / count for k, v in sums.items()}, device)  # over the global batch
                line = {"step": done, "time": round(now - t0, 3),
                        "images_per_s": round(count * config.batch_size / max(step_seconds, 1e-9), 1),
                        "step_ms": round(1000 * step_seconds / count, 2), **{k: round(v, 6) for k, v in logged.items()}}
                if world.is_main:
                    with open(metrics, "a", encoding="utf-8") as f:
                        f.write(json.dumps(line) + "\n")
                sums, count, step_seconds = {}, 0, 0.0
            if world.is_main and (done % config.sample_every == 0 or final):
                last_sample = _save_samples(trainer, out, done, config)
            snapshot = final or (config.snapshot_every and done % config.snapshot_every == 0)
            if done % config.checkpoint_every == 0 or final or snapshot:
                _save(trainer, config, spec, data, out, done, snapshot=bool(snapshot))
            t_step = time.perf_counter()
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    steps_run = config.steps - start
    if world.is_main and steps_run <= 0 and last_sample is None:
        last_sample = _save_samples(trainer, out, start, config)
    return TrainResult(out_dir=out, checkpoint=out / CHECKPOINT, samples=last_sample, metrics=metrics,
                       step=max(config.steps, start), start_step=start, seconds=seconds,
                       images_per_s=steps_run * config.batch_size / seconds if steps_run > 0 else 0.0,
                       losses=logged, world_size=world.size)


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


def _check_replicas(trainer: Trainer) -> None:
    """Every rank must hold the same weights; a collective, so every rank calls it."""
    world = trainer.world
    if not world.distributed:
        return
    prints = world.gather(parameter_fingerprint(trainer.modules()), trainer.device)
    if any(not torch.equal(prints[0], p) for p in prints[1:]):
        raise ConfigError(f"the {world.size} processes no longer hold the same weights: trainer "
                          f"{_qualname(trainer)} updates a network outside self.G_train / self.D_train (whose "
                          "backward averages gradients over processes); see ganrt.train.trainer")


def _save(trainer: Trainer, config: TrainConfig, spec: GeneratorSpec, data: ImageDataset | FolderIndex, out: Path,
          step: int, snapshot: bool) -> None:
    rng = _rng_states(trainer)
    _check_replicas(trainer)
    if not trainer.world.is_main:
        return
    tensors = {f"{prefix}.{k}": v for prefix, mod in trainer.modules().items() for k, v in mod.state_dict().items()}
    ckpt = Checkpoint(spec=spec, tensors=tensors, step=step, discriminator_config=trainer.discriminator_config(),
                      train_config=config.to_dict(), dataset=data.identity, extra={"trainer": _qualname(trainer)})
    CheckpointPair(out).save(
        write_state=lambda path: save_train_state(
            path, step=step, optimizers=trainer.optimizers, rng=rng, extra_state=trainer.extra_state(),
            grad_scalers=trainer.precision.state_dict(), world_size=trainer.world.size),
        write_checkpoint=lambda path: save_checkpoint(path, ckpt))
    if snapshot:
        save_checkpoint(out / "checkpoints" / f"step-{step:06d}.safetensors", ckpt)


def _shared_hash(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The hash two dataset identities both carry (pixels' before files'), or None when they share none."""
    return next((key for key in ("sha256", "files_sha256") if key in saved and key in current), None)


def _restore(trainer: Trainer, config: TrainConfig, spec: GeneratorSpec, data: ImageDataset | FolderIndex,
             pair: CheckpointPair) -> tuple[int, int]:
    """Load the run's last checkpoint and its optimiser state; returns (step, world size that wrote it)."""
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
    key = _shared_hash(ckpt.dataset, data.identity)
    if key is not None and ckpt.dataset[key] != data.identity[key]:
        raise DataError(f"cannot resume {ckpt_path}: it was trained on dataset {ckpt.dataset.get('name')!r} "
                        f"({key} {str(ckpt.dataset[key])[:12]}...), but {config.dataset!r} has {key} "
                        f"{str(data.identity[key])[:12]}...")
    if key is None:
        raise DataError(f"cannot resume {ckpt_path}: its dataset was read in memory by an older ganrt (a hash of "
                        "decoded pixels), which --data-workers cannot check without decoding every image; resume "
                        "with --data-workers 0")
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
    try:
        _set_rng_states(trainer, state.rng, config, ckpt.step)
    except CheckpointError as e:
        raise CheckpointError(f"{state_path}: {e}") from None
    trainer.precision.load_state_dict(state.grad_scalers)
    trainer.load_extra_state(state.extra_state)
    return ckpt.step, state.world_size


def _remove_stale_temp_files(out: Path) -> None:
    """Temporary files of writes a kill interrupted."""
    for folder in (out, out / "samples", out / "checkpoints"):
        remove_temp_files(folder)


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
