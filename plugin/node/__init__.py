"""The node's runtime: configuration, the persistent job queue, the worker loop and its
transports (spool or Orthanc in; C-STORE or Orthanc REST out), the Orthanc plugin."""
