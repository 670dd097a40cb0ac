"""Export: torch -> ONNX, verification, fp16, int8 and TensorRT engines, packed as a bundle.

    from ganrt.export import export, export_checkpoint
    bundle = export_checkpoint("run/checkpoint.safetensors", "bundle/", precisions=("fp32", "fp16", "int8"))
    bundle = export(my_generator, "bundle/", spec=GeneratorSpec(arch="external", factory="pkg.mod:make", ...))

Importing this package imports torch (the exporters need it) but no inference backend.
"""

from ganrt.export.pipeline import EXPORT_PRECISIONS, export, export_checkpoint

__all__ = ["EXPORT_PRECISIONS", "export", "export_checkpoint"]
