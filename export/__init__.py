"""Export: torch -> ONNX, verification, fp16, int8 and TensorRT engines, packed as a bundle."""
