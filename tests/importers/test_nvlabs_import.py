"""`ganrt import nvlabs`: NVlabs snapshots become ganrt checkpoints whose generator draws NVlabs' images."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from ganrt.cli import cli
from ganrt.errors import ConfigError, SnapshotError

torch = pytest.importorskip("torch")

NAMES = ["stylegan2-ada-cond-32", "stylegan2-64", "stylegan3-t-32", "stylegan3-r-cond-32"]


def _draw(module, spec, stored, i):
    from ganrt.latents import latents_from_seeds
    from ganrt.postprocess import ToUint8NHWC

    z = torch.from_numpy(latents_from_seeds(stored["seeds"], spec.latent_dim))
    labels = torch.from_numpy(stored["labels"]) if spec.num_classes else None
    with torch.no_grad():
        raw = module(z, labels, torch.full((len(z),), float(stored["truncation"][i])))
    return ToUint8NHWC(spec.output_range)(raw).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_ganrt_module_draws_nvlabs_images_within_one_level(name, nv):
    from ganrt.importers import nvlabs

    module, spec = nvlabs.load(nv.snapshot_path(name))
    family, _, classes, resolution = nv.SNAPSHOTS[name]
    assert (spec.arch, spec.num_classes, spec.height, spec.width, spec.channels) == (family, classes, resolution,
                                                                                   resolution, 3)
    assert spec.has_truncation and not module.training
    stored = nv.stored_images(name)
    assert list(stored["truncation"]) == pytest.approx([0.5, 0.7, 1.0]) and len(stored["seeds"]) == 8
    for i in range(len(stored["truncation"])):
        ours = _draw(module, spec, stored, i)
        assert nv.max_levels(ours, stored["images"][i]) <= 1, (name, float(stored["truncation"][i]))
    assert stored["images"].std() > 20, "near-constant images would prove nothing"


def test_truncation_and_labels_change_the_images(nv):
    from ganrt.importers import nvlabs

    module, spec = nvlabs.load(nv.snapshot_path("stylegan3-r-cond-32"))
    stored = nv.stored_images("stylegan3-r-cond-32")
    assert not np.array_equal(stored["images"][0], stored["images"][2])
    z = torch.randn(1, spec.latent_dim).expand(3, -1)
    with torch.no_grad():
        by_label = module(z, torch.tensor([0, 1, 2]), torch.ones(3))
        at_zero = module(z, torch.tensor([0, 1, 2]), torch.zeros(3))
    assert (by_label[0] - by_label[1]).abs().max() > 1e-2
    # psi = 0 draws w_avg itself, whatever the latent and the label
    torch.testing.assert_close(at_zero[0], at_zero[1])


def test_checkpoint_records_the_source_and_rebuilds_from_json_alone(nv, tmp_path):
    from ganrt.checkpoint import load_generator, read_metadata

    out = tmp_path / "g.safetensors"
    result = CliRunner().invoke(cli, ["import", "nvlabs", str(nv.snapshot_path("stylegan2-ada-cond-32")),
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    meta = read_metadata(out)
    source = meta["extra"]["imported_from"]
    assert source["sha256"] == hashlib.sha256(nv.snapshot_path("stylegan2-ada-cond-32").read_bytes()).hexdigest()
    assert source["network"] == "G_ema" and source["config"] == "StyleGAN2"
    assert source["nvlabs_class"] == "Generator"
    assert {"MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer", "ToRGBLayer",
            "FullyConnectedLayer"} <= set(source["nvlabs_classes"])
    assert source["init_kwargs"]["synthesis_kwargs"]["conv_clamp"] == 256  # StyleGAN2-ADA's layout, recorded
    assert meta["dataset"]["nvlabs_training_set_kwargs"]["use_labels"] is True
    assert report["spec"]["num_classes"] == 4 and report["parity"] is None
    g, spec = load_generator(out)
    stored = nv.stored_images("stylegan2-ada-cond-32")
    assert nv.max_levels(_draw(g, spec, stored, 1), stored["images"][1]) <= 1


def test_network_g_is_the_other_generator(nv, tmp_path):
    from ganrt.checkpoint import read_checkpoint
    from ganrt.importers import nvlabs

    g, spec = nvlabs.load(nv.snapshot_path("stylegan2-64"), network="G")
    stored = nv.stored_images("stylegan2-64")
    assert nv.max_levels(_draw(g, spec, stored, 2), stored["images"][2]) > 1  # G is not G_ema
    path = nvlabs.import_snapshot(nv.snapshot_path("stylegan2-64"), tmp_path / "g.safetensors", network="G")
    ckpt = read_checkpoint(path)
    assert ckpt.has("G") and not ckpt.has("G_ema") and ckpt.extra["imported_from"]["network"] == "G"


def test_the_output_is_never_overwritten_without_force(nv, tmp_path):
    out = tmp_path / "g.safetensors"
    out.write_text("keep me")
    args = ["import", "nvlabs", str(nv.snapshot_path("stylegan3-t-32")), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--force" in result.output and out.read_text() == "keep me"
    result = CliRunner().invoke(cli, args + ["--force"])
    assert result.exit_code == 0, result.output
    assert "StyleGAN3-T" in result.output and "next: ganrt export" in result.output
    with pytest.raises(ConfigError, match="directory"):
        from ganrt.importers import nvlabs

        nvlabs.import_snapshot(nv.snapshot_path("stylegan3-t-32"), tmp_path, force=True)
    result = CliRunner().invoke(cli, ["import", "nvlabs", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 2  # a folder: click's own refusal of SNAPSHOT
    result = CliRunner().invoke(cli, ["import", "nvlabs", str(nv.snapshot_path("stylegan3-t-32")), "--out",
                                      str(tmp_path), "--force"])
    assert result.exit_code == 2 and "is a directory" in result.output


def test_force_never_overwrites_the_snapshot_itself(nv, tmp_path):
    snapshot = tmp_path / "s.pkl"
    snapshot.write_bytes(nv.snapshot_path("stylegan3-t-32").read_bytes())
    result = CliRunner().invoke(cli, ["import", "nvlabs", str(snapshot), "--out", str(snapshot), "--force"])
    assert result.exit_code == 2 and "is the snapshot itself" in result.output
    assert snapshot.read_bytes() == nv.snapshot_path("stylegan3-t-32").read_bytes()


def test_trust_options_go_together(nv, tmp_path):
    args = ["import", "nvlabs", str(nv.snapshot_path("stylegan3-t-32")), "--out", str(tmp_path / "g.safetensors")]
    result = CliRunner().invoke(cli, args + ["--verify-against-source", str(nv.STANDIN)])
    assert result.exit_code == 2 and "--trust-code" in result.output
    result = CliRunner().invoke(cli, args + ["--trust-code"])
    assert result.exit_code == 2 and "--verify-against-source" in result.output
    assert not (tmp_path / "g.safetensors").exists()


def _edit_layer(attr, value):
    def edit(data):
        for net in ("G_ema", "G"):
            synthesis = data[net].meta["state"]["_modules"]["synthesis"]
            name = synthesis.meta["state"]["layer_names"][3]
            synthesis.meta["state"]["_modules"][name].meta["state"][attr] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_edit_layer("padding", [1, 2, 3, 4]), r"padding \[1, 2, 3, 4\] with its kernel, filters and factors gives"),
    (_edit_layer("down_radial", True), r"tensors do not fit the network its attributes describe \(size mismatch"),
    (_edit_layer("in_size", [40, 41]), "ganrt reproduces square grids only"),
])
def test_a_network_ganrt_does_not_reproduce_is_refused_with_one_line(edit, message, nv, tmp_path):
    changed = nv.rewrite_snapshot("stylegan3-t-32", tmp_path / "changed.pkl", edit)
    with pytest.raises(SnapshotError, match=message) as e:
        from ganrt.importers import nvlabs

        nvlabs.read(changed)
    assert "\n" not in str(e.value)


def test_each_layer_is_built_as_the_snapshot_describes_it(nv, tmp_path):
    """A StyleGAN3 layer's clamp is the snapshot's: changed there, ganrt's network takes it (and draws
    differently), rather than a value ganrt would derive itself."""
    from ganrt.importers import nvlabs

    changed = nv.rewrite_snapshot("stylegan3-t-32", tmp_path / "changed.pkl", _edit_layer("conv_clamp", 0.05))
    plain, clamped = nvlabs.read(nv.snapshot_path("stylegan3-t-32")), nvlabs.read(changed)
    assert clamped.spec.arch_kwargs["synthesis"]["layers"][3]["conv_clamp"] == 0.05
    assert plain.spec.arch_kwargs["synthesis"]["layers"][3]["conv_clamp"] == 256
    z = torch.randn(2, plain.spec.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(plain.module(z), clamped.module(z))


def test_unsupported_generators_are_refused_with_one_line(nv, tmp_path):
    from ganrt.importers import nvlabs

    def four_channels(data):
        data["G_ema"].meta["state"]["img_channels"] = 4

    def no_w_avg(data):
        del data["G_ema"].meta["state"]["_modules"]["mapping"].meta["state"]["_buffers"]["w_avg"]

    def rename(data):
        data["G_ema"].meta["class_name"] = "Discriminator"

    def no_weight(data):
        synthesis = data["G_ema"].meta["state"]["_modules"]["synthesis"]
        del synthesis.meta["state"]["_modules"]["b64"].meta["state"]["_modules"]["conv1"].meta["state"]["_parameters"][
            "weight"]

    def text_state(data):
        data["G_ema"].meta["state"]["_modules"]["mapping"].meta["state"] = {"_modules": "not a dict"}

    for edit, message in ((four_channels, "4-channel"), (no_w_avg, "w_avg"), (rename, "not a StyleGAN2"),
                          (no_weight, "not laid out as NVlabs'"), (text_state, "num_layers is None")):
        path = nv.rewrite_snapshot("stylegan2-64", tmp_path / f"{edit.__name__}.pkl", edit)
        with pytest.raises(SnapshotError, match=message):
            nvlabs.read(path)
    with pytest.raises(SnapshotError, match="no network 'G_ema'"):
        path = tmp_path / "only-d.pkl"
        with nv.standin_on_path():
            data = pickle.loads(nv.snapshot_path("stylegan2-64").read_bytes())
            path.write_bytes(pickle.dumps({"D": data["D"]}))
        nvlabs.read(path)
