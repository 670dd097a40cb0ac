"""The architecture registry.

Each family lives in its own module (``ganrt/models/<name>.py``) and registers a ``ModelFamily`` when
imported. Modules are imported on first use, so listing the names never imports torch.

Conventions every family follows (the export, runtime and training stages rely on them):

- ``G.forward(z, labels=None, truncation=None)``: ``z`` (B, latent_dim) float32, ``labels`` (B,) int64
  when the spec is conditional, ``truncation`` (B,) float32 when ``spec.has_truncation``; returns
  (B, C, H, W) float images in ``spec.output_range`` (normally [-1, 1]). No randomness inside forward in
  eval mode (noise is a buffer or an input), so the graph exports deterministically.
- ``D.forward(x, labels=None, return_features=False)``: logits (B,), or ``(logits, features)`` with
  ``features`` (B, F) from the last hidden layer (used by the feature-matching loss).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ganrt.errors import SpecError

# name -> module that registers it; listed here so `ganrt train --help` can show the choices without
# importing torch.
FAMILY_MODULES: dict[str, str] = {
    "dcgan": "ganrt.models.dcgan",
    "stylegan": "ganrt.models.stylegan",
    "biggan": "ganrt.models.biggan",
    "progan": "ganrt.models.progan",
    "vae": "ganrt.models.vae",
}


@dataclass(frozen=True)
class ModelFamily:
    name: str
    description: str
    build_generator: Callable[..., Any]  # (spec: GeneratorSpec) -> nn.Module
    build_discriminator: Callable[..., Any] | None  # (spec, **discriminator_config) -> nn.Module
    default_kwargs: Callable[[int], dict[str, Any]] = field(default=lambda resolution: {})
    has_truncation: bool = False
    supports_conditional: bool = True
    supported_resolutions: tuple[int, ...] = (32, 64, 128)
    # "ganrt.train.module:Class" of a family-specific trainer (progressive growing, VAE objective);
    # None = the standard adversarial loop.
    trainer: str | None = None
    default_loss: str = "nonsaturating"


_REGISTRY: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    _REGISTRY[family.name] = family
    return family


def names() -> list[str]:
    return list(FAMILY_MODULES)


def get(name: str) -> ModelFamily:
    if name not in _REGISTRY:
        module = FAMILY_MODULES.get(name)
        if module is None:
            raise SpecError(f"unknown architecture {name!r}; known: {', '.join(names())}")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                raise SpecError(f"architecture {name!r} is not available in this build of ganrt") from None
            raise
    return _REGISTRY[name]


def build_generator(spec):
    """Build the generator a spec describes (weights freshly initialised)."""
    if spec.arch == "external":
        return load_factory(spec.factory)()
    return get(spec.arch).build_generator(spec)


def square_generator_kwargs(spec, family: str, known) -> dict[str, Any]:
    """``spec.arch_kwargs`` after the checks every square-image family makes (ValueError names the problem)."""
    if spec.height != spec.width:
        raise ValueError(f"{family} needs square images, got {spec.height}x{spec.width}")
    unknown = set(spec.arch_kwargs) - set(known)
    if unknown:
        raise ValueError(f"unknown {family} arch_kwargs {sorted(unknown)}; known: {list(known)}")
    return dict(spec.arch_kwargs)


def load_factory(path: str) -> Callable[[], Any]:
    """Resolve 'package.module:callable' (a user's generator factory)."""
    if not path or ":" not in path:
        raise SpecError(f"a generator factory must look like 'package.module:callable', got {path!r}")
    mod_name, attr = path.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise SpecError(f"cannot import {mod_name!r} for generator factory {path!r}: {e}") from None
    obj = mod
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SpecError(f"{mod_name!r} has no attribute {attr!r} (generator factory {path!r})")
    if not callable(obj):
        raise SpecError(f"generator factory {path!r} is not callable")
    return obj
