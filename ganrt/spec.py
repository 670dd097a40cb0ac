"""GeneratorSpec: the I/O contract of a generator that every stage agrees on.

A spec says which architecture builds the generator (and with which keyword arguments), what it takes
(``z`` of ``latent_dim``, ``labels`` in ``[0, num_classes)`` when conditional, ``truncation`` when the
family has one) and what it returns (``channels x height x width`` images in ``output_range``).
It is stored as JSON in checkpoints and bundle manifests, so it holds plain values only.

Your own generator needs no more than its I/O::

    GeneratorSpec(latent_dim=128, num_classes=0, channels=3, height=64, width=64)

``arch`` defaults to "external" (a user's module, called with exactly the inputs it takes: ``(z)``,
``(z, labels)``, ``(z, labels, truncation)``). ``factory="pkg.mod:callable"`` optionally names code that
rebuilds the module, which the torch backend imports only when its caller passes ``trust_code=True``;
without a factory a bundle of it runs on the graph backends (onnxruntime, OpenVINO, TensorRT).

How a user's module takes and returns what the graph does (the graph's own I/O never changes):

- ``z_layout="nchw"``: it takes z as [B, latent_dim, 1, 1] (the PyTorch DCGAN tutorial's generator);
- ``labels_as="one-hot"``: it takes the class as a one-hot float vector [B, num_classes] (pytorch-pretrained-
  biggan's BigGAN, most conditional GANs written for ImageNet);
- ``fixed_truncation=0.4``: it takes truncation as a Python number it computes with (BigGAN picks batch-norm
  statistics by it): the module is called with that value and the graph draws every image at it (no
  ``truncation`` input: ``has_truncation`` stays False);
- ``output_layout="nhwc"``: it returns images [B, H, W, C];
- ``output_range=(0, 1)``: it returns images in [0, 1] rather than [-1, 1].
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ganrt.errors import SpecError

SPEC_VERSION = 1
EXTERNAL = "external"
# "package.module:callable" (dotted names; the callable may be an attribute path such as "Class.create")
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
MAX_SIDE = 1 << 16  # image sides and latent sizes past this are a corrupt file, not a generator


@dataclass(frozen=True, kw_only=True)
class GeneratorSpec:
    arch: str = EXTERNAL  # registry name ("dcgan", "stylegan", ...) or "external" for a user's module
    latent_dim: int
    channels: int
    height: int
    width: int
    num_classes: int = 0  # 0 = unconditional
    has_truncation: bool = False
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    output_range: tuple[float, float] = (-1.0, 1.0)
    factory: str | None = None  # "pkg.module:callable" for a user's own generator
    # how a user's module takes and returns what the graph does (module docstring); families use the defaults
    z_layout: str = "flat"  # "flat": z [B, latent_dim]; "nchw": z [B, latent_dim, 1, 1]
    labels_as: str = "index"  # "index": labels int64 [B]; "one-hot": float [B, num_classes]
    fixed_truncation: float | None = None  # a Python number passed after the other inputs
    output_layout: str = "nchw"  # "nchw" or "nhwc"

    def __post_init__(self) -> None:
        def integer(name: str, value: Any, minimum: int = 1, maximum: int = MAX_SIDE) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
                raise SpecError(f"GeneratorSpec.{name} must be an integer in [{minimum}, {maximum}], got {value!r}")

        if not isinstance(self.arch, str) or not 0 < len(self.arch) <= 64:
            raise SpecError(f"GeneratorSpec.arch must be a family name or 'external', got {self.arch!r}")
        integer("latent_dim", self.latent_dim)
        integer("channels", self.channels)
        integer("height", self.height)
        integer("width", self.width)
        integer("num_classes", self.num_classes, minimum=0, maximum=1 << 24)
        if self.channels not in (1, 3):
            raise SpecError(f"GeneratorSpec.channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if not isinstance(self.has_truncation, bool):
            raise SpecError(f"GeneratorSpec.has_truncation must be true or false, got {self.has_truncation!r}")
        if not isinstance(self.arch_kwargs, dict):
            raise SpecError("GeneratorSpec.arch_kwargs must be a dict of JSON values")
        object.__setattr__(self, "output_range", _output_range(self.output_range))
        if self.factory is not None:
            if not isinstance(self.factory, str) or not FACTORY_PATTERN.match(self.factory):
                raise SpecError(f"GeneratorSpec.factory must look like 'package.module:callable', got {self.factory!r}")
            if self.arch != EXTERNAL:
                raise SpecError(f"GeneratorSpec.factory names a user's module; the {self.arch!r} family is built by "
                                "ganrt itself: drop factory, or use arch='external'")
        try:
            json.dumps(self.arch_kwargs)
        except TypeError as e:
            raise SpecError(f"GeneratorSpec.arch_kwargs must hold JSON values only: {e}") from None
        self._check_user_call()

    def _check_user_call(self) -> None:
        for name, choices in CALL_FORMS.items():
            if getattr(self, name) not in choices:
                raise SpecError(f"GeneratorSpec.{name} must be one of {', '.join(map(repr, choices))}, "
                                f"got {getattr(self, name)!r}")
        t = self.fixed_truncation
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                raise SpecError(f"GeneratorSpec.fixed_truncation must be a number (the truncation the module is "
                                f"called with), got {t!r}")
            object.__setattr__(self, "fixed_truncation", float(t))
            if self.has_truncation:
                raise SpecError("GeneratorSpec.fixed_truncation calls the module with one truncation value, "
                                "has_truncation makes it a graph input: set one of them")
        if self.labels_as == "one-hot" and not self.conditional:
            raise SpecError("GeneratorSpec.labels_as='one-hot' needs num_classes > 0 (the one-hot vector's size)")
        changed = [n for n in (*CALL_FORMS, "fixed_truncation") if getattr(self, n) != _DEFAULTS[n]]
        if changed and not self.external:
            raise SpecError(f"GeneratorSpec.{changed[0]} describes how ganrt calls a user's module; the "
                            f"{self.arch!r} family is ganrt's own: drop it, or use arch='external'")

    @property
    def external(self) -> bool:
        """A user's own module (not a ganrt family): called with exactly the inputs it takes."""
        return self.arch == EXTERNAL

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def input_names(self) -> list[str]:
        """The exported graph's inputs, in order: "z", then "labels" (conditional), "truncation" (if it has one)."""
        return ["z"] + (["labels"] if self.conditional else []) + (["truncation"] if self.has_truncation else [])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return (self.channels, self.height, self.width)

    def replace(self, **changes: Any) -> "GeneratorSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["output_range"] = list(self.output_range)
        d["spec_version"] = SPEC_VERSION
        for name, default in _DEFAULTS.items():  # a spec without them reads as before (and by older ganrt)
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GeneratorSpec":
        if not isinstance(d, dict):
            raise SpecError(f"a GeneratorSpec must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("spec_version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise SpecError(f"GeneratorSpec version {version} is not supported (this ganrt reads {SPEC_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"GeneratorSpec has unknown fields {sorted(unknown)}")
        missing = {"latent_dim", "channels", "height", "width"} - set(d)
        if missing:
            raise SpecError(f"GeneratorSpec is missing fields {sorted(missing)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GeneratorSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError(f"GeneratorSpec is not valid JSON: {e}") from None


CALL_FORMS = {"z_layout": ("flat", "nchw"), "labels_as": ("index", "one-hot"), "output_layout": ("nchw", "nhwc")}
_DEFAULTS = {"z_layout": "flat", "labels_as": "index", "fixed_truncation": None, "output_layout": "nchw"}


def _output_range(value: Any) -> tuple[float, float]:
    """(low, high) as two finite floats with low < high (a list from JSON is accepted)."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not value[0] < value[1]:
        raise SpecError(f"GeneratorSpec.output_range must be [low, high], two finite numbers with low < high, "
                        f"got {value!r}")
    return float(value[0]), float(value[1])
