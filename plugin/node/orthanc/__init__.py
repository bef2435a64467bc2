"""Hepatica inside Orthanc: the trigger, the REST routes and the logging bridge.

Only ``hepatica_orthanc.py`` imports Orthanc's ``orthanc`` module; it is the script Orthanc's
Python plugin loads and it only wires callbacks. Everything it calls lives in the modules
beside it, which take plain values (parsed JSON, a small REST interface) so that tests run
them without Orthanc. See docs/orthanc.md.
"""
