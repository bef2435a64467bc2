"""Training and ONNX export of every model family (needs torch and MONAI; serving does not)."""
