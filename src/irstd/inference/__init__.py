"""Using trained detectors: evaluation on labelled splits, prediction on new images, export to ONNX/TorchScript."""
