"""Export: torch -> ONNX, verification, fp16, int8 and TensorRT engines, packed as a bundle.

    from ganrt.export import export, export_checkpoint
    bundle = export_checkpoint("run/checkpoint.safetensors", "bundle/", precisions=("fp32", "fp16", "int8"))
    bundle = export(my_generator, "bundle/", spec=GeneratorSpec(arch="external", factory="pkg.mod:make", ...))

The names are resolved on first use, so importing ``ganrt.export.cli`` (for ``ganrt export --help``) does
not import torch.
"""

from __future__ import annotations

__all__ = ["EXPORT_PRECISIONS", "export", "export_checkpoint"]


def __getattr__(name: str):
    if name in __all__:
        from ganrt.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ganrt.export' has no attribute {name!r}")
