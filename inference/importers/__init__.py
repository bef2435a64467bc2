"""Turn models published by other frameworks into Hepatica bundles (docs/importing_models.md).

``nnunet.import_nnunet`` reads an nnU-Net v2 results folder, ``monai_bundle.import_monai_bundle``
a MONAI model-zoo bundle. Each exports the network to ONNX and writes the framework's own
pre-processing and inference settings into ``bundle.toml``, which serving carries out without
torch (``inference.nnunet_serving``, ``inference.monai_serving``). Importing needs torch and the
framework (the ``import`` extra); it is imported lazily, like ``inference.training``.
"""

from inference.importers.common import ImportRefused

__all__ = ["ImportRefused"]
