"""Exports: a checkpoint as ONNX, TorchScript or safetensors, with its calibration baked in and
a parity check against PyTorch."""
