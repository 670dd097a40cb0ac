"""Export: torch -> ONNX, verification, fp16, int8 and TensorRT engines, packed as a bundle.

    from ganrt.export import ExportOptions, export, export_checkpoint
    result = export_checkpoint("run/checkpoint.safetensors", "bundle/",
                               options=ExportOptions(precisions=("fp32", "fp16", "int8")))
    result = export(my_generator, "bundle/", spec=GeneratorSpec(latent_dim=128, channels=3, height=64, width=64))
    result.bundle, result.passed, result.failed   # an ExportResult: what was written, what failed

The names are resolved on first use, so importing ``ganrt.export.cli`` (for ``ganrt export --help``) does
not import torch.
"""

from __future__ import annotations

__all__ = ["EXPORT_PRECISIONS", "ExportOptions", "ExportResult", "export", "export_checkpoint"]


def __getattr__(name: str):
    if name in __all__:
        from ganrt.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ganrt.export' has no attribute {name!r}")
