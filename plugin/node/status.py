"""The node's read-only HTTP side: ``/metrics`` for Prometheus and a status page for people.

Routes (GET or HEAD only; anything else is 405):

- ``/metrics``: the Prometheus text format (``plugin.node.metrics``);
- ``/`` and ``/status``: one HTML page, no script: health, jobs with their states, steps and
  timings, failures with their reasons, recent studies; it reloads itself every 10 s;
- ``/status.json``: the same facts as JSON; ``/health``: 200 ok or 503 degraded.

Access follows the REST routes' rule: the client's address must be in ``allowed_clients``
(loopback by default) and, with a configured user, HTTP basic auth must name it. A status
server on another address than loopback refuses to start without credentials
(``plugin.node.config``). Study UIDs are shown by their tail, as ``hepatica jobs`` does;
no patient value is ever on the page (job errors are redacted when recorded).
"""

from __future__ import annotations

import base64
import hmac
import html
import ipaddress
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from plugin import __version__
from plugin.node.config import HepaticaConfig, StatusConfig
from plugin.node.jobs import Job, JobQueue, JobState
from plugin.node.metrics import (
    EVENTS,
    JobStateCollector,
    ModelCollector,
    exposition,
    install_refusal_counter,
)

__all__ = ["NodeStatus", "StatusServer", "start_status_server"]

log = logging.getLogger(__name__)

HEARTBEAT_STALE_SECONDS = 60.0
RECENT_JOBS = 50
FAILURE_STATES = (JobState.FAILED, JobState.DEAD, JobState.UNSENT, JobState.SEND_QUEUED)
_UID_TAIL = 12


@dataclass
class NodeStatus:
    """What the page shows, read fresh on each request from the job database and heartbeat."""

    config: HepaticaConfig
    pipeline_version: str
    role: str
    heartbeat: Path | None = None
    checks: list[Callable[[], str | None]] = field(default_factory=list)
    """Extra health checks: each returns a problem, or None (e.g. the Celery broker)."""

    def health(self) -> dict[str, Any]:
        problems: list[str] = []
        beat = _read_json(self.heartbeat) if self.heartbeat else None
        age = None if beat is None else round(time.time() - float(beat.get("time", 0)), 1)
        if self.heartbeat is not None and age is None:
            problems.append("the worker has not reported yet")
        elif age is not None and age > HEARTBEAT_STALE_SECONDS:
            problems.append(f"the worker's last heartbeat is {age:.0f} s old")
        try:
            free = shutil.disk_usage(self.config.data_dir).free
        except OSError:
            free = 0
        if free < 1 << 30:
            problems.append(f"less than 1 GiB free under data_dir ({free >> 20} MiB)")
        for check in self.checks:
            try:
                problem = check()
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                problems.append(problem)
        return {"status": "degraded" if problems else "ok", "problems": problems,
                "hepatica": __version__, "role": self.role,
                "pipeline_version": self.pipeline_version, "heartbeat_age_seconds": age,
                "disk_free_megabytes": free >> 20}

    def snapshot(self) -> dict[str, Any]:
        jobs: list[Job] = []
        failures: list[Job] = []
        if self.config.database.exists():
            queue = JobQueue(self.config.database, pipeline_version="")
            try:
                jobs = queue.list(limit=RECENT_JOBS)
                failures = queue.list(FAILURE_STATES, limit=20)
            finally:
                queue.close()
        counts: dict[str, int] = {}
        studies: dict[str, Job] = {}
        for job in jobs:
            counts[job.state.value] = counts.get(job.state.value, 0) + 1
            studies.setdefault(job.study_uid, job)  # most recently updated first
        return {"generated_at": time.time(), "health": self.health(), "state_counts": counts,
                "jobs": [_job_view(job) for job in jobs],
                "failures": [_job_view(job) for job in failures],
                "studies": [{"study": _tail(uid), "state": job.state.value,
                             "updated_at": job.updated_at, "instances": job.instances}
                            for uid, job in list(studies.items())[:20]]}


def _job_view(job: Job) -> dict[str, Any]:
    return {"id": job.id, "study": _tail(job.study_uid), "state": job.state.value,
            "attempts": job.attempts, "send_attempts": job.send_attempts,
            "updated_at": job.updated_at, "error": job.error or "",
            "timings": {k: v for k, v in job.timings.items() if "/" not in k},
            "results": len(job.results), "sent": len(job.sent)}


def _tail(uid: str) -> str:
    return uid if len(uid) <= _UID_TAIL else "…" + uid[-_UID_TAIL:]


def _read_json(path: Path | None) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------- the page
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#1d2430;background:#fafbfc}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9em}
th,td{border:1px solid #d6dbe1;padding:.3em .5em;text-align:left;vertical-align:top}
code{white-space:nowrap}th{background:#eef1f4}.ok{color:#176b2c}.bad{color:#a31515}.note{color:#5b6573;font-size:.85em}
.state{font-weight:600}.done{color:#176b2c}.failed,.dead,.unsent{color:#a31515}
.running,.sending{color:#8a5a00}.queued,.received,.send_queued{color:#1f4e9c}
"""


def render_page(data: dict[str, Any]) -> str:
    """The status page: server-rendered HTML, every value escaped, no script."""
    e = html.escape
    health = data["health"]
    status_class = "ok" if health["status"] == "ok" else "bad"
    problems = "".join(f"<li>{e(p)}</li>" for p in health["problems"]) or "<li>none</li>"
    counts = ", ".join(f"{e(k)} {v}" for k, v in sorted(data["state_counts"].items())) or "none"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["generated_at"]))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='refresh' content='10'><title>Hepatica status</title>",
        "<link rel='icon' href='data:,'>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Hepatica status</h1>",
        "<p class='note'>RESEARCH USE ONLY — not for diagnostic use. Read-only; "
        f"generated {e(when)}.</p>",
        f"<h2>Health: <span id='health' class='{status_class}'>{e(health['status'])}</span></h2>",
        f"<ul>{problems}</ul>",
        "<p>", f"Hepatica {e(str(health['hepatica']))} ({e(health['role'])}), pipeline ",
        f"<code>{e(str(health['pipeline_version']))}</code>; heartbeat age ",
        f"{e(str(health['heartbeat_age_seconds']))} s; {health['disk_free_megabytes']} MiB free",
        f"</p><p>Recent jobs by state: {counts}</p>",
        "<h2>Jobs</h2>", _jobs_table(data["jobs"], "jobs"),
        "<h2>Failures</h2>", _jobs_table(data["failures"], "failures", errors=True),
        "<h2>Recent studies</h2>", _studies_table(data["studies"]),
        "<p class='note'>Metrics for Prometheus: <a href='metrics'>/metrics</a>; "
        "this page as JSON: <a href='status.json'>/status.json</a>.</p>",
        "</body></html>",
    ]
    return "".join(parts)


def _jobs_table(jobs: Sequence[dict[str, Any]], table_id: str, errors: bool = False) -> str:
    e = html.escape
    if not jobs:
        return f"<p id='{table_id}'>none</p>"
    head = ("<tr><th>job</th><th>study</th><th>state</th><th>attempts</th><th>delivered</th>"
            "<th>updated</th><th>steps (s)</th><th>error</th></tr>")
    rows = []
    for job in jobs:
        steps = ", ".join(f"{e(k)} {v:.2f}" for k, v in job["timings"].items())
        updated = time.strftime("%H:%M:%S", time.localtime(job["updated_at"]))
        delivered = f"{job['sent']}/{job['results']}" if job["results"] else ""
        error = job["error"] if errors or job["state"] != "done" else ""
        rows.append(
            f"<tr><td>{job['id']}</td><td><code>{e(job['study'])}</code></td>"
            f"<td class='state {e(job['state'])}'>{e(job['state'])}</td>"
            f"<td>{job['attempts']}</td><td>{e(delivered)}</td><td>{e(updated)}</td>"
            f"<td>{steps}</td><td>{e(error)}</td></tr>")
    return f"<table id='{table_id}'>{head}{''.join(rows)}</table>"


def _studies_table(studies: Sequence[dict[str, Any]]) -> str:
    e = html.escape
    if not studies:
        return "<p id='studies'>none</p>"
    rows = "".join(
        f"<tr><td><code>{e(s['study'])}</code></td>"
        f"<td class='state {e(s['state'])}'>{e(s['state'])}</td><td>{s['instances']}</td>"
        f"<td>{e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s['updated_at'])))}</td>"
        "</tr>" for s in studies)
    return ("<table id='studies'><tr><th>study</th><th>state</th><th>instances</th>"
            f"<th>updated</th></tr>{rows}</table>")


# ----------------------------------------------------------------------- the server
class StatusServer:
    """A small threaded HTTP server in a daemon thread; ``port`` is the bound one."""

    def __init__(self, settings: StatusConfig, status: NodeStatus | None,
                 registry: CollectorRegistry) -> None:
        self.settings = settings
        self.status = status
        self.registry = registry
        self.networks = [ipaddress.ip_network(n, strict=False)
                         for n in settings.allowed_clients]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return 0 if self._server is None else int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def start(self) -> None:
        handler = _handler_for(self)
        server_class = _server_class(self.settings.host)
        self._server = server_class((self.settings.host, self.settings.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="hepatica-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def allowed(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def authorised(self, header: str | None) -> bool:
        if not self.settings.username:
            return True
        expected = "Basic " + base64.b64encode(
            f"{self.settings.username}:{self.settings.password}".encode()).decode()
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())


def _server_class(host: str) -> type[ThreadingHTTPServer]:
    import socket

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Server


def _handler_for(owner: StatusServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "hepatica-status"
        sys_version = ""

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def _refuse_method(self) -> None:
            self._send(405, "text/plain", b"read-only: GET or HEAD\n", True,
                       {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method

        def _answer(self, send_body: bool) -> None:
            if not owner.allowed(self.client_address[0]):
                self._send(403, "text/plain", b"forbidden\n", send_body)
                return
            if not owner.authorised(self.headers.get("Authorization")):
                self._send(401, "text/plain", b"authentication required\n", send_body,
                           {"WWW-Authenticate": 'Basic realm="hepatica"'})
                return
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            try:
                route = _ROUTES.get(path)
                if route is None:
                    self._send(404, "text/plain", b"not found\n", send_body)
                    return
                status, content_type, body = route(owner)
            except Exception:
                log.exception("status page %s failed", path)
                self._send(500, "text/plain", b"internal error (see the node's log)\n",
                           send_body)
                return
            self._send(status, content_type, body, send_body)

        def _send(self, status: int, content_type: str, body: bytes, send_body: bool,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'none'; "
                             "style-src 'unsafe-inline'; img-src data:")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("status %s " + format, self.client_address[0], *args)

    return Handler


def _metrics(owner: StatusServer) -> tuple[int, str, bytes]:
    return 200, CONTENT_TYPE_LATEST, exposition(EVENTS, owner.registry)


def _page(owner: StatusServer) -> tuple[int, str, bytes]:
    if owner.status is None:
        return 404, "text/plain", b"no status page on this process; see /metrics\n"
    return 200, "text/html; charset=utf-8", render_page(owner.status.snapshot()).encode()


def _json(owner: StatusServer) -> tuple[int, str, bytes]:
    if owner.status is None:
        return 404, "text/plain", b"no status on this process; see /metrics\n"
    return 200, "application/json", json.dumps(owner.status.snapshot(), indent=1).encode()


def _health(owner: StatusServer) -> tuple[int, str, bytes]:
    report = (owner.status.health() if owner.status is not None
              else {"status": "ok", "hepatica": __version__})
    code = 200 if report["status"] == "ok" else 503
    return code, "application/json", json.dumps(report).encode()


_ROUTES: dict[str, Callable[[StatusServer], tuple[int, str, bytes]]] = {
    "/metrics": _metrics, "/": _page, "/status": _page, "/status.json": _json,
    "/health": _health,
}


def start_status_server(config: HepaticaConfig, pipeline_version: str, role: str, *,
                        heartbeat: Path | None = None, with_jobs: bool = True,
                        extra_depths: Callable[[], dict[str, int]] | None = None,
                        checks: Sequence[Callable[[], str | None]] = (),
                        port: int | None = None) -> StatusServer | None:
    """Start the status server ``[status]`` describes, or None when it is disabled or its port
    cannot be bound (logged: the node must keep receiving studies without its status page).

    ``with_jobs``: this process shares the job database (a node); a Celery worker has none
    and serves ``/metrics`` and ``/health`` only. ``port`` overrides ``[status] port``.
    """
    settings = config.status
    if not settings.enabled:
        return None
    if port is not None:
        from dataclasses import replace

        settings = replace(settings, port=port)
    install_refusal_counter()
    registry = CollectorRegistry()
    registry.register(ModelCollector(config.pipeline.bundle_dirs, role))
    status = None
    if with_jobs:
        registry.register(JobStateCollector(config.database, pipeline_version, extra_depths))
        status = NodeStatus(config, pipeline_version, role, heartbeat, list(checks))
    server = StatusServer(settings, status, registry)
    try:
        server.start()
    except OSError as exc:
        log.error("status page and /metrics not served: cannot listen on %s:%d (%s)",
                  settings.host, settings.port, exc)
        return None
    log.info("status page and /metrics on %s", server.url)
    return server
