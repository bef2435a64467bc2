"""Synthetic liver studies (phantoms) with ground truth, for tests, demo and training."""

from dicom_io.synthetic.anatomy import LesionTruth, Phantom, PhantomSpec, make_phantom
from dicom_io.synthetic.writer import write_phantom_study

__all__ = ["LesionTruth", "Phantom", "PhantomSpec", "make_phantom", "write_phantom_study"]
