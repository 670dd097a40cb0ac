"""Make the NVlabs test snapshots of tests/importers/data from checkouts of NVlabs' code that you provide.

    python tools/nvlabs_fixtures.py --stylegan3 ~/src/stylegan3 --stylegan2-ada ~/src/stylegan2-ada-pytorch \\
        --out tests/importers/data [--keep-source] [--only stylegan3-t-32] [--paper]

No NVlabs code is in this repository (it is under NVIDIA's non-commercial licence): this script imports it
from the checkouts you name, each configuration in its own process (both checkouts have a ``training``
package). It builds each generator with NVlabs' classes and the keyword arguments their train.py sets, at
tiny widths with random weights (zero-initialised parameters drawn at random, StyleGAN2's ToRGB weights
scaled by 0.25, a few forward passes with update_emas to track w_avg and StyleGAN3's input magnitudes),
draws NVlabs' images (noise_mode='const', force_fp32=True, seeds 0-7 through ganrt.latents, psi 0.5/0.7/1.0,
uint8 by ganrt.postprocess) into ``<name>.nvlabs-images.npz``, and pickles the snapshot as NVlabs' training
loop does. The embedded module source is replaced by a placeholder unless --keep-source (the committed
files must not carry it). ``--paper`` makes 256x256 snapshots of paper-like width instead (for
`ganrt bench`; hundreds of MB, never committed).

NVlabs' code imports ``pkg_resources``, which setuptools 81 dropped: ``pip install 'setuptools<81'`` in the
environment that runs this, or put a one-line ``pkg_resources.py`` (``from packaging.version import parse as
parse_version``) on its path.
"""

from __future__ import annotations

import argparse
import copy
import pickle
import subprocess
import sys
from pathlib import Path

PLACEHOLDER = ("# NVlabs module source removed from this test fixture (ganrt never reads it). " + "#" * 200)[:256]
SEEDS = list(range(8))
TRUNCATIONS = [0.5, 0.7, 1.0]
D_TINY = {"block_kwargs": {}, "mapping_kwargs": {}, "epilogue_kwargs": {"mbstd_group_size": 4}, "channel_base": 64,
          "channel_max": 8}
SG3_BETA = 0.5 ** (32 / 20000)  # train.py's magnitude_ema_beta at batch 32
# name -> (checkout, G class, G kwargs, D class or None, D kwargs, c_dim, resolution, torch seed)
CONFIGS = {
    "stylegan2-ada-cond-32": (
        "stylegan2-ada", "training.networks.Generator",
        {"z_dim": 16, "w_dim": 16, "mapping_kwargs": {"num_layers": 2},
         "synthesis_kwargs": {"channel_base": 256, "channel_max": 16, "num_fp16_res": 4, "conv_clamp": 256}},
        "training.networks.Discriminator", {**D_TINY, "num_fp16_res": 4, "conv_clamp": 256}, 4, 32, 1),
    "stylegan2-64": (
        "stylegan3", "training.networks_stylegan2.Generator",
        {"z_dim": 16, "w_dim": 16, "mapping_kwargs": {"num_layers": 8}, "channel_base": 256, "channel_max": 16,
         "fused_modconv_default": "inference_only", "conv_clamp": 1},
        "training.networks_stylegan2.Discriminator", D_TINY, 0, 64, 2),
    "stylegan3-t-32": (
        "stylegan3", "training.networks_stylegan3.Generator",
        {"z_dim": 16, "w_dim": 16, "mapping_kwargs": {"num_layers": 2}, "channel_base": 512, "channel_max": 16,
         "magnitude_ema_beta": SG3_BETA},
        "training.networks_stylegan2.Discriminator", D_TINY, 0, 32, 3),
    "stylegan3-r-cond-32": (
        "stylegan3", "training.networks_stylegan3.Generator",
        {"z_dim": 16, "w_dim": 16, "mapping_kwargs": {"num_layers": 2}, "channel_base": 1024, "channel_max": 32,
         "magnitude_ema_beta": SG3_BETA, "conv_kernel": 1, "use_radial_filters": True},
        "training.networks_stylegan2.Discriminator", D_TINY, 3, 32, 4),
}
# StyleGAN2's other two architectures, for parity runs (made with --only; not committed as test snapshots)
EXTRA = {}
for _arch, _seed in (("orig", 8), ("resnet", 9)):
    EXTRA[f"stylegan2-{_arch}-32"] = (
        "stylegan3", "training.networks_stylegan2.Generator",
        {"z_dim": 16, "w_dim": 16, "mapping_kwargs": {"num_layers": 8}, "channel_base": 256, "channel_max": 16,
         "fused_modconv_default": "inference_only", "conv_clamp": 256, "architecture": _arch}, None, {}, 0, 32, _seed)
PAPER = {  # 256x256, the widths of NVlabs' FFHQ-U 256 ablations (--cbase=16384; config R doubles it)
    "stylegan2-256-paper": (
        "stylegan3", "training.networks_stylegan2.Generator",
        {"z_dim": 512, "w_dim": 512, "mapping_kwargs": {"num_layers": 8}, "channel_base": 16384, "channel_max": 512,
         "fused_modconv_default": "inference_only", "conv_clamp": 256}, None, {}, 0, 256, 5),
    "stylegan3-t-256-paper": (
        "stylegan3", "training.networks_stylegan3.Generator",
        {"z_dim": 512, "w_dim": 512, "mapping_kwargs": {"num_layers": 2}, "channel_base": 16384, "channel_max": 512,
         "magnitude_ema_beta": SG3_BETA}, None, {}, 0, 256, 6),
    "stylegan3-r-256-paper": (
        "stylegan3", "training.networks_stylegan3.Generator",
        {"z_dim": 512, "w_dim": 512, "mapping_kwargs": {"num_layers": 2}, "channel_base": 32768, "channel_max": 1024,
         "magnitude_ema_beta": SG3_BETA, "conv_kernel": 1, "use_radial_filters": True}, None, {}, 0, 256, 7),
}


def make(name: str, checkout: Path, out: Path, keep_source: bool) -> None:
    """In a process of its own: build, exercise, draw and pickle one configuration with NVlabs' code."""
    sys.path.insert(0, str(checkout))
    import dnnlib
    import numpy as np
    import torch
    from torch_utils import persistence

    from ganrt.latents import labels_from_seeds, latents_from_seeds
    from ganrt.postprocess import ToUint8NHWC

    _, g_class, g_kwargs, d_class, d_kwargs, c_dim, res, seed = {**CONFIGS, **EXTRA, **PAPER}[name]

    def easy(value):  # NVlabs' train.py passes nested EasyDicts, and they end up in the pickle
        return dnnlib.EasyDict({k: easy(v) for k, v in value.items()}) if isinstance(value, dict) else value

    torch.manual_seed(seed)
    common = {"c_dim": c_dim, "img_resolution": res, "img_channels": 3}
    G = dnnlib.util.construct_class_by_name(class_name=g_class, **easy(g_kwargs), **common).requires_grad_(False)
    D = augment_pipe = None
    if d_class:
        D = dnnlib.util.construct_class_by_name(class_name=d_class, **easy(d_kwargs), **common).requires_grad_(False)
        augment_pipe = dnnlib.util.construct_class_by_name(
            class_name="training.augment.AugmentPipe", xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1,
            xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    G_ema = copy.deepcopy(G).eval()
    n = 4 if res >= 256 else 16

    def labels(k):
        return (torch.nn.functional.one_hot(torch.randint(0, c_dim, (k,)), c_dim).float() if c_dim
                else torch.zeros(k, 0))

    with torch.no_grad():
        for pname, p in G_ema.named_parameters():
            if p.abs().sum() == 0:
                p.add_(torch.randn_like(p) * 0.2)
            if "torgb.weight" in pname:
                p.mul_(0.25)
        for _ in range(4):
            z = torch.randn(n, g_kwargs["z_dim"])
            if "update_emas" in G_ema.forward.__code__.co_varnames:
                G_ema(z, labels(n), update_emas=True, force_fp32=True)
            else:  # StyleGAN2-ADA tracks w_avg in training mode
                G_ema.train()
                G_ema.mapping(z, labels(n))
                G_ema.eval()
        for p, q in zip(G.parameters(), G_ema.parameters(), strict=True):
            p.copy_(q + torch.randn_like(q) * 0.05)  # G is not G_ema
        for b, q in zip(G.buffers(), G_ema.buffers(), strict=True):
            b.copy_(q)
    G.eval()
    out.mkdir(parents=True, exist_ok=True)
    if name in CONFIGS or name in EXTRA:
        z = torch.from_numpy(latents_from_seeds(SEEDS, g_kwargs["z_dim"]))
        ls = torch.from_numpy(labels_from_seeds(SEEDS, c_dim)) if c_dim else torch.zeros(0, dtype=torch.int64)
        c = torch.nn.functional.one_hot(ls, c_dim).float() if c_dim else torch.zeros(len(SEEDS), 0)
        post = ToUint8NHWC((-1.0, 1.0))
        with torch.no_grad():
            images = [post(G_ema(z, c, truncation_psi=psi, noise_mode="const", force_fp32=True)).numpy()
                      for psi in TRUNCATIONS]
        np.savez_compressed(out / f"{name}.nvlabs-images.npz", seeds=np.array(SEEDS, dtype=np.int64),
                            labels=ls.numpy(), truncation=np.array(TRUNCATIONS, dtype=np.float32),
                            images=np.stack(images))
    if not keep_source:
        for decorator in persistence._decorators:
            decorator._orig_module_src = PLACEHOLDER
    data = {"G": G, "D": D, "G_ema": G_ema, "augment_pipe": augment_pipe,
            "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "~/datasets/none.zip",
                                    "use_labels": bool(c_dim), "max_size": None, "xflip": False,
                                    "resolution": res, "random_seed": 0}}
    with open(out / f"{name}.pkl", "wb") as f:
        pickle.dump(data, f)
    print(f"{name}: {(out / f'{name}.pkl').stat().st_size / 1e3:.0f} kB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stylegan3", type=Path, required=True, help="a checkout of github.com/NVlabs/stylegan3")
    parser.add_argument("--stylegan2-ada", type=Path, help="a checkout of github.com/NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "tests" / "importers" / "data")
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument("--paper", action="store_true", help="the 256x256 paper-width snapshots instead")
    parser.add_argument("--keep-source", action="store_true", help="keep NVlabs' embedded source (never commit)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkouts = {"stylegan3": args.stylegan3, "stylegan2-ada": args.stylegan2_ada}
    if args.worker:
        make(args.worker, checkouts[{**CONFIGS, **EXTRA, **PAPER}[args.worker][0]], args.out, args.keep_source)
        return
    only = [n for n in args.only.split(",") if n]
    names = [n for n in ({**CONFIGS, **EXTRA, **PAPER} if only else PAPER if args.paper else CONFIGS)
             if not only or n in only]
    for name in names:
        checkout = checkouts[{**CONFIGS, **EXTRA, **PAPER}[name][0]]
        if checkout is None:
            sys.exit(f"{name} needs --stylegan2-ada")
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", name], check=True)


if __name__ == "__main__":
    main()
