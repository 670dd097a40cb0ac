import json

import pytest
import torch

from ganrt.checkpoint import Checkpoint, load_generator, read_checkpoint, read_metadata, save_checkpoint
from ganrt.errors import CheckpointError


def test_checkpoint_round_trip_keeps_spec_and_weights_exactly(tiny_checkpoint, tiny_spec):
    ckpt = read_checkpoint(tiny_checkpoint)
    assert ckpt.spec == tiny_spec
    again = ckpt.path.with_name("again.safetensors")
    save_checkpoint(again, ckpt)
    back = read_checkpoint(again)
    assert back.spec == ckpt.spec and back.step == ckpt.step
    assert set(back.tensors) == set(ckpt.tensors)
    for k, v in ckpt.tensors.items():
        assert torch.equal(back.tensors[k], v), k


def test_load_generator_rebuilds_from_metadata_alone(tiny_checkpoint, tiny_spec):
    gen, spec = load_generator(tiny_checkpoint)
    assert spec == tiny_spec and not gen.training
    z = torch.randn(2, spec.latent_dim)
    out = gen(z, torch.tensor([0, 9]))
    assert out.shape == (2, 1, 32, 32)
    assert float(out.abs().max()) <= 1.0


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.safetensors")


def test_truncated_file_is_a_clear_error(tiny_checkpoint, tmp_path):
    data = tiny_checkpoint.read_bytes()
    bad = tmp_path / "torn.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|not a readable"):
        read_checkpoint(bad)


def test_a_pickle_is_refused_without_being_loaded(tmp_path):
    import pickle

    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_checkpoint(bad)


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a ganrt checkpoint"):
        read_checkpoint(foreign)


def test_future_format_version_is_refused(tmp_path, tiny_spec):
    from safetensors.torch import save_file

    meta = Checkpoint(spec=tiny_spec, tensors={}).metadata()
    meta["format_version"] = 999
    path = tmp_path / "future.safetensors"
    save_file({"G.w": torch.zeros(1)}, str(path), metadata={"ganrt": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="version 999"):
        read_metadata(path)


def test_weights_that_do_not_fit_the_spec_are_a_clear_error(tiny_checkpoint, tmp_path):
    ckpt = read_checkpoint(tiny_checkpoint)
    wrong = Checkpoint(spec=ckpt.spec.replace(arch_kwargs={"width": 32, "embed_dim": 8}), tensors=ckpt.tensors)
    path = save_checkpoint(tmp_path / "wrong.safetensors", wrong)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_generator(path)


def test_bad_tensor_prefix_is_refused(tmp_path, tiny_spec):
    with pytest.raises(CheckpointError, match="must start with"):
        save_checkpoint(tmp_path / "x.safetensors", Checkpoint(spec=tiny_spec, tensors={"W": torch.zeros(1)}))


def test_failed_write_leaves_the_old_file_intact(tiny_checkpoint, tmp_path, tiny_spec):
    target = tmp_path / "keep.safetensors"
    target.write_bytes(tiny_checkpoint.read_bytes())
    before = target.read_bytes()
    with pytest.raises(CheckpointError):
        save_checkpoint(target, Checkpoint(spec=tiny_spec, tensors={"bad": torch.zeros(1)}))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]
