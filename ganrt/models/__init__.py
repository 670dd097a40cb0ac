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

A user's own module (``spec.arch == "external"``) takes only what it needs, ``(z)``, ``(z, labels)`` or
``(z, labels, truncation)``; :func:`as_ganrt_generator` wraps it in that convention, so export, the torch
backend and every other caller invoke it one way. Rebuilding it from a spec imports the code its
``factory`` names, which happens only when the caller says it trusts that code (``trust_code=True``):
a spec read from a file is data, and opening a file never runs code.
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
# Families that reproduce another codebase's network exactly: built by an importer (ganrt.importers) from that
# codebase's files, never trained here, so not among the names `ganrt train` offers.
IMPORTED_FAMILY_MODULES: dict[str, str] = {
    "stylegan2_nvlabs": "ganrt.models.stylegan2_nvlabs",
    "stylegan3_nvlabs": "ganrt.models.stylegan3_nvlabs",
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
        module = FAMILY_MODULES.get(name) or IMPORTED_FAMILY_MODULES.get(name)
        if module is None:
            known = names() + list(IMPORTED_FAMILY_MODULES)
            raise SpecError(f"unknown architecture {name!r}; known: {', '.join(known)}")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                raise SpecError(f"architecture {name!r} is not available in this build of ganrt") from None
            raise
    return _REGISTRY[name]


def build_generator(spec, *, trust_code: bool = False):
    """Build the generator a spec describes (weights freshly initialised), in ganrt's calling convention.

    A user's module is rebuilt by importing and calling ``spec.factory``: only with ``trust_code=True``.
    """
    if spec.arch == "external":
        if not spec.factory:
            raise SpecError("this generator is a user's module with no factory recorded: it cannot be rebuilt "
                            "in torch; run its exported graphs (onnxruntime, openvino, tensorrt)")
        if not trust_code:
            raise SpecError(f"rebuilding this generator imports and runs the code its spec names "
                            f"({spec.factory!r}); pass trust_code=True (CLI: --trust-code) only if you trust "
                            "where the file came from")
        return as_ganrt_generator(load_factory(spec.factory)(), spec)
    return get(spec.arch).build_generator(spec)


def as_ganrt_generator(module, spec):
    """``module`` called as ``(z, labels=None, truncation=None)``: a family's generator as it is, a user's
    module wrapped so it receives exactly the inputs its spec says it takes (as the exported graph does)."""
    if spec.arch != "external":
        return module
    from ganrt.models.external import UserModule

    return module if isinstance(module, UserModule) else UserModule(module, spec)


def square_generator_kwargs(spec, family: str, known) -> dict[str, Any]:
    """``spec.arch_kwargs`` after the checks every square-image family makes (ValueError names the problem)."""
    if spec.height != spec.width:
        raise ValueError(f"{family} needs square images, got {spec.height}x{spec.width}")
    unknown = set(spec.arch_kwargs) - set(known)
    if unknown:
        raise ValueError(f"unknown {family} arch_kwargs {sorted(unknown)}; known: {list(known)}")
    return dict(spec.arch_kwargs)


def load_factory(path: str) -> Callable[[], Any]:
    """Resolve 'package.module:callable' (a user's generator factory): imports that module.

    Call it only with a path the caller gave (``ganrt export --model``) or with ``trust_code=True``.
    """
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
