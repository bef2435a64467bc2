"""The script Orthanc's Python plugin loads: wiring only (docs/orthanc.md).

Orthanc configuration (orthanc-python 4.0 reads ``PythonScript``)::

    "PythonScript": "/opt/hepatica/plugin/node/orthanc/hepatica_orthanc.py",
    "Hepatica": {
        "VenvSitePackages": "/opt/hepatica/.venv/lib/python3.11/site-packages",
        "ConfigFile": "/etc/hepatica/hepatica.toml",
        "LogLevel": "INFO"
    }

The plugin embeds the system Python 3.11; ``VenvSitePackages`` names the virtual environment
Hepatica is installed in, whose packages are put first on ``sys.path`` (its ``.pth`` files
included, so an editable install works too). ``ConfigFile`` is the Hepatica TOML file the
worker reads as well: data_dir (job database), bundle_dirs and the ``[orthanc]`` filters.
"""

import json
import logging
import site
import sys
import threading

import orthanc

_settings = json.loads(orthanc.GetConfiguration()).get("Hepatica", {})


def _use_venv(site_packages):
    if not site_packages:
        return
    before = list(sys.path)
    site.addsitedir(site_packages)
    added = [entry for entry in sys.path if entry not in before]
    sys.path[:] = added + before


_use_venv(_settings.get("VenvSitePackages", ""))

from pathlib import Path  # noqa: E402

from plugin.node.config import load_config  # noqa: E402
from plugin.node.orthanc import bridge  # noqa: E402
from plugin.node.orthanc.app import HepaticaOrthanc  # noqa: E402
from plugin.node.orthanc.routes import ROUTES, Request, dispatch  # noqa: E402

log = logging.getLogger("plugin.node.orthanc")


class _Api:
    """``get``/``post`` over Orthanc's in-process REST API; 404-like errors → LookupError."""

    def get(self, path):
        try:
            return orthanc.RestApiGet(path)
        except orthanc.OrthancException as exc:
            raise LookupError(f"GET {path}: {exc}") from exc

    def post(self, path, body, content_type="text/plain"):
        try:
            return orthanc.RestApiPost(path, body)
        except orthanc.OrthancException as exc:
            raise LookupError(f"POST {path}: {exc}") from exc


bridge.install(orthanc.LogInfo, orthanc.LogWarning, orthanc.LogError,
               getattr(logging, str(_settings.get("LogLevel", "INFO")).upper(), logging.INFO))
_config_file = _settings.get("ConfigFile")
APP = HepaticaOrthanc(load_config(Path(_config_file) if _config_file else None), _Api())


def on_change(change_type, level, resource_id):
    if change_type == orthanc.ChangeType.STABLE_STUDY:
        try:
            trigger = APP.on_stable_study(resource_id)
        except Exception:  # the one place a trigger failure becomes a log line
            log.exception("stable study %s: could not decide or queue", resource_id)
            return
        job = f"job {trigger.job.id} {trigger.job.state}" if trigger.job else "no job"
        log.info("stable study …%s: %s (%s)", trigger.study_uid[-12:], trigger.decision.reason,
                 job)
    elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
        threading.Thread(target=_catch_up, name="hepatica-catch-up", daemon=True).start()
    elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        _STOPPING.set()
        APP.close()


_STOPPING = threading.Event()


def _catch_up():
    """After one StableAge, decide on studies a restart left without a stable event."""
    stable_age = float(json.loads(orthanc.GetConfiguration()).get("StableAge", 60))
    if _STOPPING.wait(stable_age):
        return
    try:
        for trigger in APP.catch_up():
            log.info("catch-up: study …%s: %s", trigger.study_uid[-12:], trigger.decision.reason)
    except Exception:
        log.exception("catch-up after start-up failed; stable events still work")


def _route(handler):
    def callback(output, uri, **request):
        answer = dispatch(APP, handler, Request(
            method=request.get("method", "GET"), groups=tuple(request.get("groups", ())),
            query=dict(request.get("get", {})), body=request.get("body") or b""))
        if answer.status == 200:
            output.AnswerBuffer(answer.encoded(), "application/json")
        elif answer.status == 405:  # Orthanc insists on its dedicated call for 405
            output.SendMethodNotAllowed(answer.body["allow"])
        else:
            body = answer.encoded()
            output.SendHttpStatus(answer.status, body.decode(), len(body))

    return callback


orthanc.RegisterOnChangeCallback(on_change)
for _pattern, _handler in ROUTES:
    orthanc.RegisterRestCallback(_pattern, _route(_handler))
log.info("Hepatica plugin ready: job database %s", APP.config.database)
