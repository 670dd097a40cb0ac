"""GeneratorSpec: the I/O contract of a generator that every stage agrees on.

A spec says which architecture builds the generator (and with which keyword arguments), what it takes
(``z`` of ``latent_dim``, ``labels`` in ``[0, num_classes)`` when conditional, ``truncation`` when the
family has one) and what it returns (``channels x height x width`` images in ``output_range``).
It is stored as JSON in checkpoints and bundle manifests, so it holds plain values only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ganrt.errors import SpecError

SPEC_VERSION = 1


@dataclass(frozen=True)
class GeneratorSpec:
    arch: str  # registry name ("dcgan", "stylegan", ...) or "external" for a user's module
    latent_dim: int
    channels: int
    height: int
    width: int
    num_classes: int = 0  # 0 = unconditional
    has_truncation: bool = False
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    output_range: tuple[float, float] = (-1.0, 1.0)
    factory: str | None = None  # "pkg.module:callable" for a user's own generator

    def __post_init__(self) -> None:
        def positive_int(name: str, value: Any, minimum: int = 1) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise SpecError(f"GeneratorSpec.{name} must be an integer >= {minimum}, got {value!r}")

        if not isinstance(self.arch, str) or not self.arch:
            raise SpecError(f"GeneratorSpec.arch must be a non-empty string, got {self.arch!r}")
        positive_int("latent_dim", self.latent_dim)
        positive_int("channels", self.channels)
        positive_int("height", self.height)
        positive_int("width", self.width)
        positive_int("num_classes", self.num_classes, minimum=0)
        if self.channels not in (1, 3):
            raise SpecError(f"GeneratorSpec.channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if not isinstance(self.arch_kwargs, dict):
            raise SpecError("GeneratorSpec.arch_kwargs must be a dict of JSON values")
        lo, hi = self.output_range
        if not lo < hi:
            raise SpecError(f"GeneratorSpec.output_range must be (low, high) with low < high, got {self.output_range}")
        object.__setattr__(self, "output_range", (float(lo), float(hi)))
        if self.arch == "external" and not self.factory:
            raise SpecError("an 'external' GeneratorSpec needs factory='package.module:callable'")
        try:
            json.dumps(self.arch_kwargs)
        except TypeError as e:
            raise SpecError(f"GeneratorSpec.arch_kwargs must hold JSON values only: {e}") from None

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
        missing = {"arch", "latent_dim", "channels", "height", "width"} - set(d)
        if missing:
            raise SpecError(f"GeneratorSpec is missing fields {sorted(missing)}")
        if "output_range" in d:
            d["output_range"] = tuple(d["output_range"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GeneratorSpec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError(f"GeneratorSpec is not valid JSON: {e}") from None
