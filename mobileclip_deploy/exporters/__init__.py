"""Export folded MobileCLIP towers to CoreML, ExecuTorch and ONNX, quantize them, and prove parity."""
