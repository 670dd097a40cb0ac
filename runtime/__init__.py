"""Runtime: one Generator API over torch, onnxruntime and TensorRT backends (``ganrt.runtime.load``)."""
