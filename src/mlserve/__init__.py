"""mlserve: an ONNX model server speaking the Open Inference Protocol (KServe V2)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
