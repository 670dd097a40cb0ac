"""The FID Inception-v3: the 2015-12-05 TensorFlow graph that FID, KID and IS are published with.

Written out here in torch (no torchvision) with the state-dict names of torchvision's ``Inception3``
(``num_classes=1008``, no aux head) and the four FID-specific blocks of pytorch-fid (average pools that do
not count padding; max pool in the last block), so the pytorch-fid weight file loads as is.

Weights are never downloaded and never unpickled by the metrics. Accepted: a ``.safetensors`` file holding
the state dict of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (``num_batches_tracked`` entries
optional: they do not change the features). Convert the published file once; this is the only step that
reads a pickle, with torch's weights-only loader (tensors only, no code), under your control::

    curl -LO https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    ganrt convert-inception-weights pt_inception-2015-12-05-6726825d.pth inception-2015-12-05.safetensors

then pass ``--inception-weights inception-2015-12-05.safetensors`` or set ``GANRT_INCEPTION_WEIGHTS``.

Input handling as in pytorch-fid: uint8 -> [0, 1], gray repeated to RGB, bilinear resize to 299x299
(``align_corners=False``, no antialiasing), then ``2x - 1``. Features: the 2048-d pool3 output; logits:
the 1008-way ``fc`` (for the Inception Score). (StyleGAN's TF-compatible resize differs slightly; FIDs from
the two pipelines agree to within a few tenths on typical data, not exactly.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ganrt.errors import MetricError
from ganrt.fileio import sha256_file
from ganrt.metrics.extractors import FeatureExtractor, to_float_nchw

ENV_VAR = "GANRT_INCEPTION_WEIGHTS"
PUBLISHED_FILE = "pt_inception-2015-12-05-6726825d.pth"
PUBLISHED_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PUBLISHED_FILE}"
RESIZE = 299
HOW_TO_GET = (
    f"download {PUBLISHED_URL} and convert it once with `ganrt convert-inception-weights {PUBLISHED_FILE} "
    f"inception-2015-12-05.safetensors`; then pass --inception-weights inception-2015-12-05.safetensors or set "
    f"{ENV_VAR}"
)
OPTIONAL = "num_batches_tracked"  # BatchNorm counters: stored by torch, unused in eval mode


def build_fid_inception():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class BasicConv2d(nn.Module):
        def __init__(self, cin: int, cout: int, **kw: Any) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    def avg_pool(x):  # TF's average pool does not count the zero padding
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class InceptionA(nn.Module):
        def __init__(self, cin: int, pool_features: int) -> None:
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
            self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
            self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg_pool(x))], 1)

    class InceptionB(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class InceptionC(nn.Module):
        def __init__(self, cin: int, c7: int) -> None:
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for i in range(1, 6):
                d = getattr(self, f"branch7x7dbl_{i}")(d)
            return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(avg_pool(x))], 1)

    class InceptionD(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
            self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
            self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            b3 = self.branch3x3_2(self.branch3x3_1(x))
            b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
            return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class InceptionE(nn.Module):
        def __init__(self, cin: int, max_pool: bool) -> None:
            super().__init__()
            self.max_pool = max_pool  # the FID graph's last block max-pools (pytorch-fid's FIDInceptionE_2)
            self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
            self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
            self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
            pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else avg_pool(x)
            return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)

    class FIDInceptionV3(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
            self.Mixed_5b = InceptionA(192, 32)
            self.Mixed_5c = InceptionA(256, 64)
            self.Mixed_5d = InceptionA(288, 64)
            self.Mixed_6a = InceptionB(288)
            self.Mixed_6b = InceptionC(768, 128)
            self.Mixed_6c = InceptionC(768, 160)
            self.Mixed_6d = InceptionC(768, 160)
            self.Mixed_6e = InceptionC(768, 192)
            self.Mixed_7a = InceptionD(768)
            self.Mixed_7b = InceptionE(1280, max_pool=False)
            self.Mixed_7c = InceptionE(2048, max_pool=True)
            self.fc = nn.Linear(2048, 1008)

        def forward(self, x):  # (B, 3, 299, 299) in [-1, 1] -> pool3 (B, 2048), logits (B, 1008)
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
            for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
                x = getattr(self, f"Mixed_{name}")(x)
            pool = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            return pool, self.fc(pool)

    return FIDInceptionV3()


def resolve_weights_path(path: str | os.PathLike | None) -> Path:
    """The weights file from the argument, else from GANRT_INCEPTION_WEIGHTS; clear errors otherwise."""
    chosen = path or os.environ.get(ENV_VAR)
    if not chosen:
        raise MetricError(f"the 'inception' extractor needs the FID Inception-v3 weights as a local file "
                          f"(nothing is downloaded): none given. To get it, {HOW_TO_GET}")
    p = Path(chosen).expanduser()
    if not p.is_file():
        raise MetricError(f"FID Inception-v3 weights file {p} does not exist. To get it, {HOW_TO_GET}")
    if p.suffix.lower() in (".pth", ".pt", ".pkl", ".bin"):
        raise MetricError(f"{p} is a pickle-based torch file, which ganrt never loads (loading a pickle can run "
                          f"code); convert it to safetensors once: {HOW_TO_GET}")
    return p


def _checked_state(state: dict, expected: dict, source: Path) -> dict:
    """``state`` as the model's full state dict (float weights; absent num_batches_tracked filled in), or a
    MetricError naming what is missing, unexpected or of the wrong shape."""
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith(OPTIONAL))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for what, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)) if keys)
        raise MetricError(f"{source} does not hold the FID Inception-v3 state dict ({detail}); expected the "
                          f"pytorch-fid 2015-12-05 weights converted to safetensors. To get it, {HOW_TO_GET}")
    full = {k: v for k, v in expected.items() if k.endswith(OPTIONAL)}
    full.update({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    return full


def convert_weights(pth: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """pytorch-fid's published ``.pth`` -> a ``.safetensors`` file the extractor loads.

    Read with ``torch.load(weights_only=True)`` (tensors and plain containers only; the pickle cannot run
    code), checked against the architecture, written atomically with the source's sha256 in its metadata.
    Returns what was converted.
    """
    import torch
    from safetensors.torch import save_file

    from ganrt.fileio import atomic_path

    pth = Path(pth)
    if not pth.is_file():
        raise MetricError(f"{pth} does not exist; download {PUBLISHED_URL} first")
    try:
        state = torch.load(str(pth), map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise MetricError(f"{pth} is not a torch state dict that loads with weights_only=True "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricError(f"{pth} does not hold a state dict of tensors")
    full = _checked_state(state, build_fid_inception().state_dict(), pth)
    tensors = {k: v.detach().contiguous() for k, v in full.items()}
    out = Path(out)
    source_sha256 = sha256_file(pth)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"source": pth.name, "source_sha256": source_sha256,
                                               "format": "ganrt.fid-inception-2015-12-05"})
    return {"out": str(out), "tensors": len(tensors), "source_sha256": source_sha256, "sha256": sha256_file(out)}


class InceptionExtractor(FeatureExtractor):
    name, label, feature_dim, has_logits = "inception", "", 2048, True

    def __init__(self, model, sha256: str, path: str) -> None:
        self.model, self.sha256, self.path = model, sha256, path

    @classmethod
    def from_file(cls, path: str | os.PathLike | None) -> "InceptionExtractor":
        from safetensors.torch import load_file

        p = resolve_weights_path(path)
        try:
            state = load_file(str(p))
        except Exception as e:
            raise MetricError(f"{p} is not a readable safetensors file ({e}). To get the right file, "
                              f"{HOW_TO_GET}") from None
        model = build_fid_inception()
        model.load_state_dict(_checked_state(state, model.state_dict(), p), strict=True)
        return cls(model.eval(), sha256_file(p), str(p))

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.sha256,
                "resize": f"bilinear to {RESIZE}x{RESIZE}, align_corners=False, no antialias (pytorch-fid)",
                "input_scaling": "x/255 * 2 - 1", "features": "pool3 (2048)"}

    def _forward(self, x):
        x = to_float_nchw(x, 3, RESIZE, antialias=False) * 2 - 1
        return self.model(x)
