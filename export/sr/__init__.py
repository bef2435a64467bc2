"""TID 1500 Measurement Report writer (Comprehensive 3D SR)."""

from export.sr.sop import SERIES_DESCRIPTION, build_measurement_report, lesion_tracking_uid

__all__ = ["SERIES_DESCRIPTION", "build_measurement_report", "lesion_tracking_uid"]
