"""Issue 14 part 2: /metrics and the status page of a running node.

A real `hepatica serve` (subprocess) receives a malformed instance and a small phantom study
over DCMTK storescu and sends the results to DCMTK storescp. ``curl`` reads /metrics before,
during and after the run: the counters and histograms must move. Debian's headless Chromium
then loads the status page (basic auth, as configured): it renders, lists the job that just
ran with its steps, and logs no console error. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plugin.node.config import ConfigError, HepaticaConfig, StatusConfig, load_config
from plugin.node.jobs import JobState
from plugin.node.status import start_status_server
from tests.integration.nodes import start_archive, start_node, stop, storescu, wait_for_job
from tests.integration.scale_helpers import SMALL_RESULTS, http_get, node_config, small_study
from tests.orthanc.orthanc_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CURL = Path("/usr/bin/curl")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
USER, PASSWORD = "ops", "status-test-password"
SEED = 424_302

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


# ----------------------------------------------------------------------- in process
@pytest.fixture
def quiet_node_config(tmp_path: Path) -> HepaticaConfig:
    return load_config(environ={"HEPATICA_DATA_DIR": str(tmp_path / "node"),
                                "HEPATICA_STATUS__PORT": "0"})


def test_access_rules_read_only_allow_list_and_basic_auth(
        quiet_node_config: HepaticaConfig) -> None:
    config = replace(quiet_node_config, status=replace(
        quiet_node_config.status, username=USER, password=PASSWORD))
    server = start_status_server(config, "hepatica-test", "node")
    assert server is not None
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert http_get(f"{base}/metrics")[0] == 401
        status, _, headers = http_get(f"{base}/status", auth=(USER, "wrong"))
        assert status == 401 and "Basic" in headers.get("WWW-Authenticate", "")
        status, body, headers = http_get(f"{base}/metrics", auth=(USER, PASSWORD))
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert "hepatica_pipeline_info" in body and "hepatica_queue_depth" in body
        assert http_get(f"{base}/nothing", auth=(USER, PASSWORD))[0] == 404
        status, body, _ = http_get(f"{base}/health", auth=(USER, PASSWORD))
        assert status in (200, 503) and '"pipeline_version": "hepatica-test"' in body
        post = subprocess.run([str(CURL), "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u",
                               f"{USER}:{PASSWORD}", "-X", "POST", f"{base}/status"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert post.stdout == "405"
    finally:
        server.stop()
    outside = replace(config, status=replace(config.status, allowed_clients=("10.0.0.0/8",)))
    server = start_status_server(outside, "hepatica-test", "node")
    assert server is not None
    try:  # loopback is not in the allow-list: refused before any credential is looked at
        assert http_get(f"http://127.0.0.1:{server.port}/metrics",
                        auth=(USER, PASSWORD))[0] == 403
    finally:
        server.stop()


def test_busy_port_leaves_the_node_running_without_status(
        quiet_node_config: HepaticaConfig) -> None:
    first = start_status_server(quiet_node_config, "v", "node")
    assert first is not None
    try:
        taken = replace(quiet_node_config, status=replace(quiet_node_config.status,
                                                          port=first.port))
        assert start_status_server(taken, "v", "node") is None
        off = replace(quiet_node_config, status=StatusConfig(enabled=False))
        assert start_status_server(off, "v", "node") is None
    finally:
        first.stop()


def test_config_refuses_an_open_status_port_and_an_http_destination_without_url() -> None:
    with pytest.raises(ConfigError, match=r"status\.username and status\.password"):
        load_config(environ={"HEPATICA_STATUS__HOST": "0.0.0.0"})
    opened = load_config(environ={"HEPATICA_STATUS__HOST": "0.0.0.0",
                                  "HEPATICA_STATUS__USERNAME": USER,
                                  "HEPATICA_STATUS__PASSWORD": PASSWORD})
    assert opened.status.host == "0.0.0.0"
    with pytest.raises(ConfigError, match=r"needs destination\.url"):
        load_config(environ={"HEPATICA_DESTINATION__KIND": "stow-rs"})
    with pytest.raises(ConfigError, match="c-store or stow-rs or orthanc-rest"):
        load_config(environ={"HEPATICA_DESTINATION__KIND": "ftp"})
    with pytest.raises(ConfigError, match="CIDR"):
        load_config(environ={"HEPATICA_STATUS__ALLOWED_CLIENTS": "not-an-address"})


# ----------------------------------------------------------------------- a real node
@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    if not CURL.exists():
        pytest.skip("needs curl")
    archive_port, port, status_port = free_port(), free_port(), free_port()
    archive = start_archive(tmp_path / "archive", archive_port)
    config = node_config(tmp_path / "hepatica.toml", data_dir=tmp_path / "node", port=port,
                         status_port=status_port, status_user=USER, stable_seconds=1.5,
                         extra=f"""[destination]
ae_title = "ARCHIVE"
port = {archive_port}
""")
    monkeypatch.setenv("HEPATICA_STATUS__PASSWORD", PASSWORD)
    log = tmp_path / "serve.log"
    proc = start_node(config, log, port)
    try:
        yield {"port": port, "status": f"http://127.0.0.1:{status_port}", "log": log,
               "database": tmp_path / "node" / "jobs.sqlite3", "archive": tmp_path / "archive"}
    finally:
        stop(proc)
        stop(archive)


def _curl_metrics(base: str) -> Samples:
    done = subprocess.run([str(CURL), "-sf", "-u", f"{USER}:{PASSWORD}", f"{base}/metrics"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return _samples(done.stdout)


def _malformed(study: Path, folder: Path) -> Path:
    """An instance of the study with its pixel data cut short (refused, quarantined)."""
    source = sorted((study / "AP").glob("*.dcm"))[0]
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.PixelData = ds.PixelData[:1000]
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / "truncated.dcm")
    return folder / "truncated.dcm"


@pytest.mark.network
@pytest.mark.dcmtk
@pytest.mark.slow
def test_metrics_move_during_a_run_and_the_page_shows_the_job(
        node: dict[str, object], tmp_path: Path) -> None:
    base = str(node["status"])
    before = _curl_metrics(base)
    assert _value(before, "hepatica_jobs", state="done") == 0
    study, study_uid = small_study(tmp_path / "study", SEED)
    storescu([_malformed(study, tmp_path / "bad")], int(str(node["port"])))
    assert storescu([study], int(str(node["port"]))).returncode == 0
    sent = sum(1 for p in study.rglob("*.dcm"))
    seen_active = False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # scrape while the job waits, runs and sends
        during = _curl_metrics(base)
        active = sum(_value(during, "hepatica_jobs", state=s)
                     for s in ("received", "queued", "running", "sending"))
        seen_active = seen_active or active >= 1
        if _value(during, "hepatica_jobs", state="done") == 1:
            break
        time.sleep(0.3)
    job = wait_for_job(Path(str(node["database"])), study_uid, {JobState.DONE}, timeout=5)
    after = _curl_metrics(base)
    assert seen_active, "no scrape saw the job before it was done"
    assert _value(after, "hepatica_instances_received_total", outcome="new") == sent
    assert _total(after, "hepatica_instances_refused_total") == 1
    assert _value(after, "hepatica_jobs_started_total") == 1
    assert _value(after, "hepatica_jobs_finished_total", state="done") == 1
    assert _value(after, "hepatica_studies", state="done") == 1
    assert _value(after, "hepatica_queue_depth", queue="jobs") == 0
    for step in ("segment", "export", "send", "total"):  # histograms moved from nothing
        assert _value(before, "hepatica_step_duration_seconds_count", step=step) == 0
        assert _value(after, "hepatica_step_duration_seconds_count", step=step) == 1, step
        assert _value(after, "hepatica_step_duration_seconds_sum", step=step) > 0, step
    assert _value(after, "hepatica_step_duration_seconds_sum", step="total") == pytest.approx(
        job.timings["total"], abs=1e-3)
    assert _value(after, "hepatica_onnx_provider", provider="CPUExecutionProvider") == 1
    assert any(n == "hepatica_model_info" for n, _ in after)
    assert len([p for p in Path(str(node["archive"])).rglob("*") if p.is_file()]) == \
        SMALL_RESULTS
    # the page, without and with credentials
    assert http_get(f"{base}/status")[0] == 401
    status, page, _ = http_get(f"{base}/status", auth=(USER, PASSWORD))
    assert status == 200 and study_uid[-12:] in page
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium package for the browser half")
    dom, console, screenshot = _browse(f"http://{USER}:{PASSWORD}@127.0.0.1:"
                                       f"{base.rsplit(':', 1)[1]}/status", tmp_path)
    assert console == []
    row = re.search(r"<tr><td>(\d+)</td><td><code>…" + re.escape(study_uid[-12:]) +
                    r"</code></td><td class=\"state done\">done</td>(.*?)</tr>", dom)
    assert row is not None and int(row.group(1)) == job.id, dom[:3000]
    assert "segment" in row.group(2) and "total" in row.group(2)
    assert '<span id="health"' in dom
    assert "RESEARCH USE ONLY" in dom
    assert "Doe" not in dom  # no patient value on the page
    assert screenshot.stat().st_size > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "status_page.png")


def _browse(url: str, tmp_path: Path) -> tuple[str, list[str], Path]:
    """Chromium headless: the DOM after load, console lines, and a screenshot."""
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--enable-logging=stderr", "--v=0", "--window-size=1280,900"]
    dom = subprocess.run([*common, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom",
                          url], capture_output=True, text=True, timeout=90, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    screenshot = tmp_path / "status_page.png"
    shot = subprocess.run([*common, f"--user-data-dir={tmp_path / 'profile-shot'}",
                           f"--screenshot={screenshot}", url], capture_output=True, text=True,
                          timeout=90, check=False)
    assert shot.returncode == 0 and screenshot.exists(), shot.stderr[-2000:]
    console = [line for log in (dom.stderr, shot.stderr) for line in log.splitlines()
               if ":CONSOLE" in line or "Uncaught" in line]
    return dom.stdout, console, screenshot
