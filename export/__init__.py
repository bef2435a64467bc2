"""DICOM result objects (SEG, TID 1500 SR, secondary capture), built with highdicom.

Never imports ``dicom_io`` or ``inference``.
"""
