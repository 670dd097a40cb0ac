"""NVlabs StyleGAN2-ADA / StyleGAN3 snapshots -> ganrt's own generators and checkpoints, no code from the file.

    from ganrt.importers import nvlabs
    G, spec = nvlabs.load("network-snapshot-000800.pkl")          # nn.Module (eval, fp32), GeneratorSpec
    nvlabs.import_snapshot("network-snapshot-000800.pkl", "g.safetensors")   # a ganrt checkpoint

The pickle is read by :mod:`ganrt.importers.nvlabs_pickle` (an allow-list of globals; the module source it
embeds is never executed). The chosen network (``G_ema`` by default) is recognised by its structure:
a ``SynthesisNetwork`` of ``SynthesisBlock`` s is StyleGAN2 (family ``stylegan2_nvlabs``), one with a
``SynthesisInput`` is StyleGAN3 (``stylegan3_nvlabs``; config R when its layers use 1x1 convolutions and
radial filters, else T). The spec is built from the effective values the snapshot's objects hold (not from
NVlabs' defaults, which differ between its repositories); ganrt's module is built from the spec, every
attribute that shapes the computation is compared with the snapshot's, and the tensors load by name
(strict). Anything ganrt does not reproduce is refused with one line (:class:`ganrt.errors.SnapshotError`).

The spec: ``latent_dim = z_dim``, ``num_classes = c_dim`` (a label is NVlabs' one-hot ``c``), square
``img_resolution`` images of ``img_channels`` (1 or 3) in [-1, 1], ``has_truncation`` (toward the snapshot's
``w_avg``, one psi per image, all layers). The checkpoint records the source file's sha256, the network's
NVlabs class names and init arguments, and (when measured) its parity against NVlabs' own forward pass.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganrt.errors import ConfigError, SnapshotError
from ganrt.importers.nvlabs_pickle import Persistent, Snapshot, plain, read_snapshot
from ganrt.spec import GeneratorSpec

NETWORKS = ("G_ema", "G")
FORMAT = "nvlabs-pickle"


@dataclass
class Imported:
    """An imported generator: ganrt's module with the snapshot's weights, its spec, and where it came from."""

    module: Any  # torch.nn.Module, eval mode, fp32
    spec: GeneratorSpec
    source: dict[str, Any]  # provenance for the checkpoint's metadata ("imported_from")
    dataset: dict[str, Any] = field(default_factory=dict)


def load(path: str | os.PathLike, network: str = "G_ema"):
    """``(torch.nn.Module in eval mode, GeneratorSpec)`` for a snapshot's network; no code from the file runs."""
    imported = read(path, network=network)
    return imported.module, imported.spec


def read(path: str | os.PathLike, network: str = "G_ema") -> Imported:
    if network not in NETWORKS:
        raise ConfigError(f"network must be one of {NETWORKS}, got {network!r}")
    snapshot = read_snapshot(path)
    g = snapshot.networks.get(network)
    if g is None:
        held = ", ".join(sorted(snapshot.networks)) or "none"
        raise SnapshotError(f"{snapshot.path} has no network {network!r} (networks: {held})")
    try:
        return _import_generator(snapshot, g, network)
    except SnapshotError as e:
        raise SnapshotError(f"{snapshot.path} ({network}): {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        # a record missing a field, or holding the wrong type: the file is no snapshot ganrt understands
        text = " ".join(str(e).split())[:200]
        raise SnapshotError(f"{snapshot.path} ({network}): the network is not laid out as NVlabs' StyleGAN2/3 "
                            f"generators are ({type(e).__name__}: {text})") from None


def _import_generator(snapshot: Snapshot, g: Persistent, network: str) -> Imported:
    mapping, synthesis = g.child("mapping"), g.child("synthesis")
    if g.class_name != "Generator" or mapping is None or synthesis is None:
        raise SnapshotError(f"the network is an NVlabs {g.class_name!r}, not a StyleGAN2/StyleGAN3 generator "
                            "(Generator with mapping and synthesis networks)")
    if synthesis.child("input") is not None and synthesis.child("input").class_name == "SynthesisInput":
        arch, config, kwargs = "stylegan3_nvlabs", _stylegan3_config(synthesis), _stylegan3_kwargs(g)
    elif synthesis.child("b4") is not None and synthesis.child("b4").class_name == "SynthesisBlock":
        arch, config, kwargs = "stylegan2_nvlabs", "StyleGAN2", _stylegan2_kwargs(g)
    else:
        raise SnapshotError(f"synthesis network of classes {sorted({o.class_name for _, o in synthesis.walk()})} "
                            "is neither StyleGAN2 (SynthesisBlock) nor StyleGAN3 (SynthesisInput)")
    spec = _spec(g, arch, kwargs)
    module = _build_and_load(spec, g)
    classes = sorted({o.class_name for _, o in g.walk()})
    source = {
        "format": FORMAT, "file": snapshot.path.name, "sha256": snapshot.sha256, "size": snapshot.size,
        "network": network, "config": config, "nvlabs_class": g.class_name, "nvlabs_classes": classes,
        "nvlabs_module_sha256": sorted({o.module_sha256 for _, o in g.walk() if o.module_sha256}),
        "persistence_versions": sorted({o.version for _, o in g.walk() if o.version is not None}),
        "init_kwargs": _json_safe(g.init_kwargs),
    }
    dataset = snapshot.data.get("training_set_kwargs")
    return Imported(module=module, spec=spec, source=source,
                    dataset={"nvlabs_training_set_kwargs": _json_safe(plain(dataset))} if dataset else {})


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _int_attr(obj: Persistent, name: str, minimum: int = 0) -> int:
    value = obj.attr(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SnapshotError(f"{obj.class_name}.{name} is {value!r}, expected an integer >= {minimum}")
    return value


def _spec(g: Persistent, arch: str, kwargs: dict[str, Any]) -> GeneratorSpec:
    z_dim, c_dim = _int_attr(g, "z_dim", 0), _int_attr(g, "c_dim", 0)
    resolution, channels = _int_attr(g, "img_resolution", 4), _int_attr(g, "img_channels", 1)
    if z_dim < 1:
        raise SnapshotError("the generator takes no latent (z_dim 0); ganrt generators draw from z")
    if channels not in (1, 3):
        raise SnapshotError(f"the generator draws {channels}-channel images; ganrt serves 1 (gray) or 3 (RGB)")
    if g.child("mapping").tensors().get("w_avg") is None:
        raise SnapshotError("the mapping network tracks no w_avg (w_avg_beta None): truncation has no centre")
    return GeneratorSpec(arch=arch, latent_dim=z_dim, channels=channels, height=resolution, width=resolution,
                         num_classes=c_dim, has_truncation=True, arch_kwargs=kwargs, output_range=(-1.0, 1.0))


def _fc_lr(fc: Persistent) -> float:
    value = fc.attr("bias_gain", fc.attr("lr_multiplier"))
    if not isinstance(value, (int, float)):
        raise SnapshotError(f"fully connected layer without a learning-rate multiplier ({value!r})")
    return float(value)


def _mapping_kwargs(g: Persistent, *, full: bool) -> dict[str, Any]:
    mapping = g.child("mapping")
    num_layers = _int_attr(mapping, "num_layers", 1)
    fc0 = mapping.child("fc0")
    if fc0 is None:
        raise SnapshotError("the mapping network has no fc0 layer")
    kwargs: dict[str, Any] = {"num_layers": num_layers, "lr_multiplier": _fc_lr(fc0)}
    if full:  # StyleGAN2's mapping is configurable: read the effective features and activation
        tensors = mapping.tensors()
        kwargs["activation"] = fc0.attr("activation", "lrelu")
        if num_layers > 1:
            kwargs["layer_features"] = int(tensors["fc0.weight"].shape[0])
        if "embed.weight" in tensors:
            kwargs["embed_features"] = int(tensors["embed.weight"].shape[0])
    return kwargs


def _stylegan2_kwargs(g: Persistent) -> dict[str, Any]:
    synthesis = g.child("synthesis")
    resolution = _int_attr(g, "img_resolution", 4)
    last = synthesis.child(f"b{resolution}")
    b4 = synthesis.child("b4")
    if last is None or last.child("conv1") is None:
        raise SnapshotError(f"the synthesis network has no block b{resolution} with conv1")
    conv = last.child("conv1")
    given = synthesis.init_kwargs
    block_given = b4.init_kwargs
    kwargs = {
        "channel_base": int(given.get("channel_base", 32768)),
        "channel_max": int(given.get("channel_max", 512)),
        "architecture": b4.attr("architecture", "skip"),
        "resample_filter": block_given.get("resample_filter", [1, 3, 3, 1]),
        "conv_clamp": conv.attr("conv_clamp"),
        "kernel_size": int(conv.tensors()["weight"].shape[-1]),
        "use_noise": bool(conv.attr("use_noise", True)),
        "activation": conv.attr("activation", "lrelu"),
    }
    return {"w_dim": _int_attr(g, "w_dim", 1), "mapping": _mapping_kwargs(g, full=True), "synthesis": kwargs}


def _stylegan3_kwargs(g: Persistent) -> dict[str, Any]:
    """The synthesis network as the snapshot built it: the input's and every layer's geometry, read from their
    objects (ganrt derives none of it; the filters and frequencies are the snapshot's tensors)."""
    from ganrt.models.stylegan3_nvlabs import InputPlan, LayerPlan

    synthesis = g.child("synthesis")
    names = synthesis.attr("layer_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SnapshotError(f"SynthesisNetwork.layer_names is {names!r:.100}, expected the layers' names")
    layers = []
    for name in names:
        layer = synthesis.child(name)
        if layer is None or layer.class_name != "SynthesisLayer":
            raise SnapshotError(f"synthesis.{name} is not a SynthesisLayer")
        layers.append({"name": name, **_fields(layer, LayerPlan, skip=("name",))})
    first = synthesis.child("input")
    output_scale = synthesis.attr("output_scale")
    if not isinstance(output_scale, (int, float)) or isinstance(output_scale, bool):
        raise SnapshotError(f"SynthesisNetwork.output_scale is {output_scale!r}, expected a number")
    return {"w_dim": _int_attr(g, "w_dim", 1), "mapping": _mapping_kwargs(g, full=False),
            "synthesis": {"input": _fields(first, InputPlan), "layers": layers, "output_scale": float(output_scale)}}


def _fields(obj: Persistent, plan, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values ``obj`` holds for the fields of ``plan`` (a dataclass): a square size [s, s] as s, numbers as
    Python numbers; the family checks their types when it builds."""
    from dataclasses import fields

    out = {}
    for f in fields(plan):
        if f.name in skip:
            continue
        value = obj.attr(f.name)
        if f.name.endswith("_size") or f.name == "size":
            if not isinstance(value, list) or len(value) != 2 or value[0] != value[1]:
                raise SnapshotError(f"{obj.class_name}.{f.name} is {value!r}: ganrt reproduces square grids only")
            value = value[0]
        if f.name == "padding" and isinstance(value, list):
            value = [int(v) for v in value]
        if isinstance(value, float) and str(f.type) == "int" and value.is_integer():
            value = int(value)  # NVlabs keeps sampling rates as floats of whole numbers
        out[f.name] = value
    return out


def _stylegan3_config(synthesis: Persistent) -> str:
    layers = [synthesis.child(n) for n in synthesis.attr("layer_names") or []]
    kernels = {layer.attr("conv_kernel") for layer in layers if layer is not None and not layer.attr("is_torgb")}
    radial = any(layer.attr("down_radial") for layer in layers if layer is not None)
    return "StyleGAN3-R" if kernels == {1} and radial else "StyleGAN3-T" if kernels == {3} and not radial \
        else "StyleGAN3"


# ganrt module class -> the NVlabs attributes of the object at the same path that must hold these values
def _agreement(module) -> dict[str, Any]:
    from ganrt.models import nvlabs_layers as L
    from ganrt.models import stylegan2_nvlabs as S2
    from ganrt.models import stylegan3_nvlabs as S3

    if isinstance(module, L.FullyConnected):
        return {"activation": module.activation, "weight_gain": module.weight_gain, "bias_gain": module.bias_gain}
    if isinstance(module, S2.SynthesisLayer):
        c = module.config
        return {"up": c.up, "use_noise": c.use_noise, "activation": c.activation, "conv_clamp": c.conv_clamp,
                "padding": c.kernel_size // 2}
    if isinstance(module, S2.ToRGBLayer):
        return {"conv_clamp": module.conv_clamp, "weight_gain": module.weight_gain}
    if isinstance(module, S2.SynthesisBlock):
        return {"architecture": module.architecture, "in_channels": module.in_channels}
    if isinstance(module, S2.SkipConv):
        return {"up": 2, "down": 1, "activation": "linear", "conv_clamp": None, "weight_gain": module.weight_gain}
    if isinstance(module, S3.SynthesisLayer):
        p = module.plan
        return {"is_torgb": p.is_torgb, "in_channels": p.in_channels, "out_channels": p.out_channels,
                "in_size": [p.in_size, p.in_size], "out_size": [p.out_size, p.out_size],
                "conv_kernel": p.conv_kernel, "up_factor": p.up_factor, "down_factor": p.down_factor,
                "up_taps": p.up_taps, "down_taps": p.down_taps, "down_radial": p.down_radial,
                "padding": list(p.padding), "conv_clamp": p.conv_clamp}
    if isinstance(module, S3.SynthesisInput):
        return {"channels": module.channels, "size": [module.size, module.size],
                "sampling_rate": module.sampling_rate, "bandwidth": module.bandwidth}
    if isinstance(module, S3.SynthesisNetwork):
        return {"layer_names": module.layer_names, "output_scale": module.output_scale}
    return {}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _build_and_load(spec: GeneratorSpec, g: Persistent):
    from ganrt.models import build_generator

    try:
        module = build_generator(spec)
    except (ValueError, TypeError) as e:
        raise SnapshotError(f"ganrt cannot build this network ({e})") from None
    records = dict(g.walk())
    for name, sub in module.named_modules():
        expected = _agreement(sub)
        if not expected:
            continue
        record = records.get(name)
        if record is None:
            raise SnapshotError(f"the snapshot has no {name or 'generator'} where ganrt's {type(sub).__name__} sits")
        for attr, value in expected.items():
            held = record.attr(attr)
            if not _same(value, held):
                raise SnapshotError(f"{name}.{attr} is {held!r} in the snapshot, ganrt's network has {value!r}: "
                                    f"this {record.class_name} is built differently and ganrt does not reproduce it")
    tensors = {k: v.float() for k, v in g.tensors().items()}
    try:
        result = module.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # a tensor of another shape than the snapshot's own attributes describe
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e).strip())
        raise SnapshotError(f"the snapshot's tensors do not fit the network its attributes describe ({first[:200]})") \
            from None
    problems = [f"missing {', '.join(result.missing_keys[:3])}" if result.missing_keys else "",
                f"unexpected {', '.join(result.unexpected_keys[:3])}" if result.unexpected_keys else ""]
    if any(problems):
        raise SnapshotError("the snapshot's tensors do not match ganrt's network: " + "; ".join(p for p in problems
                                                                                               if p))
    return module.eval().requires_grad_(False)


def check_destination(snapshot: str | os.PathLike, out: str | os.PathLike, *, force: bool) -> Path:
    """``out`` as a Path, if a checkpoint may be written there: not a directory, not the snapshot itself, not an
    existing file unless ``force``."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; give the checkpoint's file name, e.g. {out / 'g.safetensors'}")
    if out.exists() and out.resolve() == Path(snapshot).resolve():
        raise ConfigError(f"{out} is the snapshot itself; write the checkpoint to another file")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force (force=True) to replace it")
    return out


def import_snapshot(path: str | os.PathLike, out: str | os.PathLike, *, network: str = "G_ema", force: bool = False,
                    parity: dict[str, Any] | None = None, imported: Imported | None = None) -> Path:
    """Write the snapshot's ``network`` as a ganrt checkpoint at ``out`` (atomic); returns its path.

    ``out`` must not exist unless ``force``. ``parity``: figures against NVlabs' own forward pass
    (ganrt.importers.nvlabs_source), recorded in the metadata. ``imported``: an already-read :func:`read`.
    """
    from ganrt.checkpoint import Checkpoint, save_checkpoint

    out = check_destination(path, out, force=force)
    imported = imported or read(path, network=network)
    prefix = "G_ema." if imported.source["network"] == "G_ema" else "G."
    tensors = {prefix + k: v for k, v in imported.module.state_dict().items()}
    extra = {"imported_from": {**imported.source, **({"parity": parity} if parity else {})}}
    return save_checkpoint(out, Checkpoint(spec=imported.spec, tensors=tensors, dataset=imported.dataset,
                                           extra=extra))
