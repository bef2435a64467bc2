"""Models as ONNX bundles, the runtime, segmentation, measurements and heatmaps.

Serving needs numpy and onnxruntime only; ``inference.training`` needs torch/MONAI.
Never imports ``dicom_io`` or ``export``.
"""
