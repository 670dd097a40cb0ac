"""The pure logic of training at scale, in one process: sharding of data and noise, the launcher's command
line, the environment torchrun sets, precision and device checks, and the options that reach a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ganrt.cli import cli
from ganrt.errors import BackendUnavailable, ConfigError
from ganrt.train.augment import diff_augment
from ganrt.train.batches import BatchOrder
from ganrt.train.launch import Launch
from ganrt.train.loop import train
from ganrt.train.noise import BatchNoise
from ganrt.train.precision import Precision
from ganrt.train.regularizers import gradient_penalty
from ganrt.train.world import World

from .conftest import tiny_config


# --- sharding: N ranks x b draw exactly what 1 rank x N*b draws ------------------------------------------------------
def _shards(draw, world: int):
    """``draw(noise)`` on each of ``world`` ranks (each with a generator of the same seed), concatenated."""
    return torch.cat([draw(BatchNoise(torch.Generator().manual_seed(7), rank, world)) for rank in range(world)])


@pytest.mark.parametrize("world", [2, 4])
def test_rank_slices_of_noise_concatenate_to_the_one_process_draw(world):
    whole = BatchNoise(torch.Generator().manual_seed(7))
    assert torch.equal(_shards(lambda n: n.randn((8 // world, 5), "cpu"), world), whole.randn((8, 5), "cpu"))
    whole = BatchNoise(torch.Generator().manual_seed(7))
    assert torch.equal(_shards(lambda n: n.randint(0, 10, (8 // world,), "cpu"), world),
                       whole.randint(0, 10, (8,), "cpu"))


def test_one_process_noise_is_the_plain_generator_draw():
    a = BatchNoise(torch.Generator().manual_seed(3)).rand((4, 2), "cpu")
    assert torch.equal(a, torch.rand((4, 2), generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_of_each_rank_is_its_slice_of_the_whole_batch(policy):
    x = torch.randn(8, 3, 16, 16)
    whole = diff_augment(x, policy.split(","), generator=torch.Generator().manual_seed(1))
    parts = [diff_augment(x[r * 4:(r + 1) * 4], policy.split(","),
                          generator=BatchNoise(torch.Generator().manual_seed(1), r, 2)) for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_gradient_penalty_mixes_each_rank_like_its_slice_of_the_batch():
    critic = lambda x: x.flatten(1).square().sum(1)  # noqa: E731
    real, fake = torch.randn(8, 1, 2, 2), torch.randn(8, 1, 2, 2)
    whole = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(2))
    parts = [gradient_penalty(critic, real[r * 4:(r + 1) * 4], fake[r * 4:(r + 1) * 4],
                              generator=BatchNoise(torch.Generator().manual_seed(2), r, 2)) for r in range(2)]
    assert torch.allclose((parts[0] + parts[1]) / 2, whole)


def test_rank_shards_of_the_data_order_are_the_global_batch():
    order = BatchOrder(n=10, batch_size=6, seed=3)
    for step in range(5):  # crosses epoch boundaries
        shards = [order.shard(step, World(rank=r, size=3)) for r in range(3)]
        assert np.array_equal(np.concatenate(shards), order.indices(step))
        assert all(len(s) == 2 for s in shards)


# --- the environment torchrun sets, devices ---------------------------------------------------------------------------
def test_world_comes_from_torchruns_environment():
    assert World.from_env({}) == World()
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "TORCHELASTIC_RESTART_COUNT": "2"}
    world = World.from_env(env)
    assert (world.rank, world.size, world.local_rank, world.restart_count) == (3, 4, 1, 2)
    assert world.distributed and not world.is_main
    with pytest.raises(ConfigError, match="RANK/WORLD_SIZE/LOCAL_RANK must be integers"):
        World.from_env({"RANK": "x", "WORLD_SIZE": "2"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_for_several_processes_without_a_gpu_is_backend_unavailable():
    with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
        World(rank=1, size=2, local_rank=1).device("cuda")


def test_a_named_gpu_for_several_processes_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="give --device cuda and each process takes the GPU of its local rank"):
        World(rank=0, size=2).device("cuda:1")


def test_batch_must_split_evenly_over_the_processes(tmp_path, labelled_npz):
    with pytest.raises(ConfigError, match="batch_size 6 is the global batch and must split evenly over the 4"):
        train(tiny_config(labelled_npz, batch_size=6), tmp_path / "run", progress=False,
              world=World(rank=0, size=4))


# --- precision, memory format ----------------------------------------------------------------------------------------
def test_fp16_without_cuda_is_refused_and_bf16_runs_on_cpu(tmp_path, labelled_npz):
    with pytest.raises(ConfigError, match="precision fp16 needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))
    config = tiny_config(labelled_npz, steps=2, r1_gamma=1.0, r1_every=1, feature_matching=0.5)
    train(config, tmp_path / "fp32", progress=False)
    result = train(config.replace(precision="bf16"), tmp_path / "bf16", progress=False)
    assert all(np.isfinite(v) for v in result.losses.values())
    from ganrt.checkpoint import read_checkpoint

    a = read_checkpoint(tmp_path / "fp32" / "checkpoint.safetensors").tensors
    b = read_checkpoint(tmp_path / "bf16" / "checkpoint.safetensors").tensors
    assert all(b[k].dtype == a[k].dtype for k in a)  # weights stay float32; only forward passes ran in bf16
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("G."))


@pytest.mark.parametrize("arch", ["vae", "progan"])
def test_bf16_runs_the_family_trainers(tmp_path, labelled_npz, arch):
    kwargs = {"max_width": 8, "embed_dim": 4}
    result = train(tiny_config(labelled_npz, arch=arch, resolution=16, steps=2, precision="bf16",
                               arch_kwargs=kwargs), tmp_path / "run", progress=False)
    assert result.step == 2 and all(np.isfinite(v) for v in result.losses.values())


def test_channels_last_trains_the_same_run_within_float_tolerance(tmp_path, labelled_npz):
    config = tiny_config(labelled_npz, steps=2, diffaugment="translation")
    train(config, tmp_path / "a", progress=False)
    train(config.replace(channels_last=True), tmp_path / "b", progress=False)
    from ganrt.checkpoint import read_checkpoint

    a = read_checkpoint(tmp_path / "a" / "checkpoint.safetensors").tensors
    b = read_checkpoint(tmp_path / "b" / "checkpoint.safetensors").tensors
    assert max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()) < 1e-4


def test_sync_batchnorm_on_cpu_processes_is_refused(tmp_path, labelled_npz):
    from ganrt.train.datasets import load_dataset
    from ganrt.train.loop import make_spec
    from ganrt.train.trainer import AdversarialTrainer

    config = tiny_config(labelled_npz, sync_batchnorm=True)
    spec = make_spec(config, load_dataset(labelled_npz, 32))
    with pytest.raises(ConfigError, match="--sync-batchnorm needs CUDA"):
        AdversarialTrainer(config, spec, world=World(rank=0, size=2))


# --- the launcher ----------------------------------------------------------------------------------------------------
def test_one_machine_launches_a_standalone_rendezvous():
    args = Launch(nproc_per_node=2, max_restarts=3).torchrun_args(["--out", "r"])
    assert args == ["--nproc-per-node", "2", "--max-restarts", "3", "--standalone", "-m", "ganrt.train", "--out", "r"]


def test_several_machines_meet_at_the_endpoint_elastic_or_with_fixed_ranks():
    elastic = Launch(nproc_per_node=8, nnodes="2:4", rdzv_endpoint="node0:29400", rdzv_id="faces")
    assert elastic.torchrun_args([])[4:] == ["--nnodes", "2:4", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                                             "node0:29400", "--rdzv-id", "faces", "-m", "ganrt.train"]
    static = Launch(nproc_per_node=8, nnodes="2", node_rank=1, rdzv_endpoint="10.0.0.1:29500")
    assert static.torchrun_args([])[4:] == ["--nnodes", "2", "--node-rank", "1", "--rdzv-backend", "static",
                                            "--rdzv-endpoint", "10.0.0.1:29500", "-m", "ganrt.train"]


@pytest.mark.parametrize("launch, match", [
    (Launch(nnodes="2"), "need --rdzv-endpoint"),
    (Launch(nnodes="3:2", rdzv_endpoint="h:1"), "--nnodes must be"),
    (Launch(nnodes="two"), "--nnodes must be"),
    (Launch(nnodes="2", rdzv_endpoint="nohost"), "must be HOST:PORT"),
    (Launch(nnodes="2", node_rank=2, rdzv_endpoint="h:1"), "--node-rank 2 must be below --nnodes 2"),
    (Launch(nnodes="1:2", node_rank=0, rdzv_endpoint="h:1"), "give --nnodes N, not a range"),
])
def test_launch_options_are_checked(launch, match):
    with pytest.raises(ConfigError, match=match):
        launch.validate()


def test_workers_get_the_command_line_minus_the_launcher_options(monkeypatch, tmp_path, labelled_npz):
    seen = {}
    monkeypatch.setattr("ganrt.train.launch.launch", lambda spec, args: seen.update(spec=spec, args=args))
    result = CliRunner().invoke(cli, ["train", "--dataset", str(labelled_npz), "--out", str(tmp_path / "r"),
                                      "--lr-d", "1e-05", "--no-minibatch-stddev", "--spectral-norm", "--json",
                                      "--batch-size", "8", "--nproc-per-node", "2", "--max-restarts", "1",
                                      "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    assert seen["spec"] == Launch(nproc_per_node=2, max_restarts=1)
    args = seen["args"]
    assert "--nproc-per-node" not in args and "--max-restarts" not in args
    pairs = dict(zip(args, args[1:], strict=False))
    assert pairs["--lr-d"] == "1e-05" and pairs["--batch-size"] == "8" and pairs["--precision"] == "bf16"
    assert {"--no-minibatch-stddev", "--spectral-norm", "--json"} <= set(args)


@pytest.mark.parametrize("args, match", [
    (["--batch-size", "6", "--nproc-per-node", "4"], "batch_size 6 is the global batch"),
    (["--precision", "fp16", "--nproc-per-node", "2"], "precision fp16 needs a CUDA device"),
    (["--nnodes", "2", "--nproc-per-node", "2"], "need --rdzv-endpoint"),
    (["--dataset", "/no/such.npz", "--nproc-per-node", "2"], "does not exist"),
])
def test_launcher_mistakes_are_one_line_before_any_process_starts(tmp_path, args, match, monkeypatch):
    monkeypatch.setattr("ganrt.train.launch.launch", lambda spec, args: pytest.fail("launched"))
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "r"), "--dataset", "mnist", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and match in lines[0]


def test_the_launcher_is_refused_inside_a_torchrun_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path / "r"), "--nproc-per-node", "2"])
    assert result.exit_code == 2 and "already started by torchrun" in result.output


def test_metrics_log_throughput_per_step(tmp_path, labelled_npz):
    train(tiny_config(labelled_npz, steps=2), tmp_path / "run", progress=False)
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        assert entry["images_per_s"] > 0 and entry["step_ms"] > 0
