"""Everything that speaks DICOM on the wire or on disk.

Never imports ``inference`` or ``export``: the rooms exchange plain values.
"""
