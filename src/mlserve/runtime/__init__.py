"""One model version's runtime: its onnxruntime session (``session``), Open Inference Protocol
tensors ↔ numpy (``tensors``, ``binary``, the compiled ``_decode``), features by name and the
one cast rule (``columns``), and the check of ONNX external data (``external_data``)."""
