"""The plugin script, its filters and routes, against a fake ``orthanc`` module (no server)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from plugin.cli.demo import free_port
from plugin.node.config import HepaticaConfig, OrthancConfig, load_config
from plugin.node.jobs import JobQueue, JobState
from plugin.node.orthanc import bridge
from plugin.node.orthanc.app import HepaticaOrthanc, heartbeat_path
from plugin.node.orthanc.filters import (
    OWN_MANUFACTURER,
    SeriesFacts,
    StudyFacts,
    TriggerRules,
    decide,
    is_own_series,
    source_fingerprint,
)
from plugin.node.orthanc_worker import OrthancClient, OrthancUnavailable
from tests.inference.inference_helpers import write_bundle_toml, write_scale_model
from tests.orthanc import fake_orthanc

SCRIPT = Path(__file__).resolve().parents[2] / "plugin" / "node" / "orthanc" / "hepatica_orthanc.py"
STUDY_ID = "11111111-22222222-33333333-44444444-55555555"
STUDY_UID = "1.2.826.0.1.3680043.10.1456.42"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    write_bundle_toml(folder)
    write_scale_model(folder / "model.onnx")
    return folder


def hepatica_toml(tmp_path: Path, bundle_dir: Path, **orthanc: Any) -> Path:
    lines = [f'data_dir = "{tmp_path / "data"}"', "[pipeline]",
             f'bundle_dirs = ["{bundle_dir}"]', "[orthanc]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in orthanc.items()]
    path = tmp_path / "hepatica.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def load_plugin(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> ModuleType:
    """Import the plugin script as Orthanc would, with the fake module as ``orthanc``."""
    fake_orthanc.reset({"StableAge": 1, "Hepatica": {"ConfigFile": str(config_file)}})
    monkeypatch.setitem(sys.modules, "orthanc", fake_orthanc)
    spec = importlib.util.spec_from_file_location("hepatica_orthanc_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bundle_dir: Path
           ) -> Iterator[ModuleType]:
    for name in list(os.environ):
        if name.startswith("HEPATICA_"):
            monkeypatch.delenv(name)
    module = load_plugin(monkeypatch, hepatica_toml(tmp_path, bundle_dir))
    yield module
    module.APP.close()
    logging.getLogger().removeHandler(next(
        h for h in logging.getLogger().handlers if isinstance(h, bridge.OrthancLogHandler)))


def series_json(sid: str, modality: str = "MR", manufacturer: str = "Siemens",
                number: str = "3", instances: tuple[str, ...] = ("i1", "i2"),
                description: str = "T1 VIBE AP", body_part: str = "LIVER") -> dict[str, Any]:
    return {"ID": sid, "Instances": list(instances), "MainDicomTags": {
        "Modality": modality, "Manufacturer": manufacturer, "SeriesNumber": number,
        "SeriesDescription": description, "BodyPartExamined": body_part}}


def put_study(series: list[dict[str, Any]], description: str = "MRI LIVER") -> None:
    fake_orthanc.resources[f"/studies/{STUDY_ID}"] = {
        "ID": STUDY_ID, "MainDicomTags": {"StudyInstanceUID": STUDY_UID,
                                          "StudyDescription": description}}
    fake_orthanc.resources[f"/studies/{STUDY_ID}/series"] = series
    fake_orthanc.posts["/tools/lookup"] = lambda body: (
        [{"ID": STUDY_ID, "Type": "Study"}] if body.decode() == STUDY_UID else [])


def fire_stable() -> None:
    for callback in fake_orthanc.change_callbacks:
        callback(fake_orthanc.ChangeType.STABLE_STUDY, fake_orthanc.ResourceType.STUDY, STUDY_ID)


def jobs(plugin: ModuleType) -> list[dict[str, Any]]:
    answer = fake_orthanc.call_rest("/hepatica/jobs")
    assert answer.status == 200
    listed: list[dict[str, Any]] = json.loads(answer.body)["jobs"]
    return listed


# ----------------------------------------------------------------------------- filters
RULES = TriggerRules()


def facts(*series: SeriesFacts, description: str = "MRI LIVER", **kw: Any) -> StudyFacts:
    return StudyFacts(STUDY_ID, STUDY_UID, description, tuple(series), **kw)


MR = SeriesFacts("s1", modality="MR", body_part="LIVER", description="T1 AP",
                 manufacturer="Siemens", series_number=3, instance_ids=("a", "b"),
                 remote_aet="PACS")
SEG = SeriesFacts("s9", modality="SEG", manufacturer="Hepatica", series_number=9901,
                  instance_ids=("z",))


def test_own_series_by_manufacturer_or_by_result_number_and_modality() -> None:
    assert OWN_MANUFACTURER == __import__("export.common").common.MANUFACTURER
    assert is_own_series(SEG, RULES)
    unnamed_sr = SeriesFacts("s", modality="SR", series_number=9902)
    assert is_own_series(unnamed_sr, RULES)
    site_mr_9901 = SeriesFacts("s", modality="MR", series_number=9901)
    assert not is_own_series(site_mr_9901, RULES)
    assert not is_own_series(SeriesFacts("s", manufacturer="Hepatica Phantom"), RULES)


@pytest.mark.parametrize(("rules", "study", "run", "why"), [
    (RULES, facts(MR), True, "pass every rule"),
    (RULES, facts(SEG), False, "only Hepatica's results"),
    (TriggerRules(modalities=("CT",)), facts(MR), False, "modality CT"),
    (TriggerRules(modalities=()), facts(MR), True, "pass"),
    (TriggerRules(body_parts=("ABDOMEN", "liver")), facts(MR), True, "pass"),
    (TriggerRules(body_parts=("CHEST",)), facts(MR), False, "Body Part Examined LIVER"),
    (TriggerRules(description_include=("liver",)), facts(MR), True, "pass"),
    (TriggerRules(description_include=("^AP$", r"\bAP\b")), facts(MR), True, "pass"),
    (TriggerRules(description_include=("brain",)), facts(MR), False, "no study or series"),
    (TriggerRules(description_exclude=("research",)), facts(MR, description="RESEARCH"),
     False, "exclude rule"),
    (TriggerRules(allowed_callers=("PACS",)), facts(MR), True, "pass"),
    (TriggerRules(allowed_callers=("ROUTER",)), facts(MR), False, "sent by PACS"),
    (TriggerRules(required_metadata="HepaticaRoute"), facts(MR), False, "HepaticaRoute"),
    (TriggerRules(required_metadata="HepaticaRoute"),
     facts(MR, metadata={"HepaticaRoute": "yes"}), True, "pass"),
    (TriggerRules(required_label="liver-ai"), facts(MR, labels=("liver-ai",)), True, "pass"),
    (TriggerRules(required_label="liver-ai"), facts(MR), False, "label"),
])
def test_decide(rules: TriggerRules, study: StudyFacts, run: bool, why: str) -> None:
    decision = decide(study, rules)
    assert decision.run is run
    assert why in decision.reason


def test_fingerprint_ignores_our_results_but_not_new_source_instances() -> None:
    base = source_fingerprint(facts(MR), RULES)
    assert source_fingerprint(facts(MR, SEG), RULES) == base
    more = SeriesFacts("s1", modality="MR", instance_ids=("a", "b", "c"))
    assert source_fingerprint(facts(more), RULES) != base


# ----------------------------------------------------------------------------- the script
def test_stable_study_queues_once_and_our_results_never_requeue(plugin: ModuleType) -> None:
    put_study([series_json("s1")])
    fire_stable()
    [job] = jobs(plugin)
    assert job["state"] == "queued" and job["study_uid"] == STUDY_UID
    fire_stable()  # Orthanc may fire twice
    put_study([series_json("s1"), series_json("s9", "SEG", "Hepatica", "9901", ("r1",))])
    queue = JobQueue(plugin.APP.config.database, job["pipeline_version"])
    claimed = queue.claim()
    assert claimed is not None
    queue.mark(claimed.id, JobState.SENDING)
    queue.mark(claimed.id, JobState.DONE)
    fire_stable()  # after our results were stored
    [after] = jobs(plugin)
    assert after["state"] == "done" and after["attempts"] == 1
    assert any("source instances unchanged" in text for _, text in fake_orthanc.logs)
    # New source images after processing: processed again.
    put_study([series_json("s1", instances=("i1", "i2", "i3"))])
    fire_stable()
    [again] = jobs(plugin)
    assert again["state"] == "queued" and again["id"] == job["id"]
    queue.close()


def test_filtered_study_makes_no_job_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bundle_dir: Path
) -> None:
    module = load_plugin(monkeypatch, hepatica_toml(tmp_path, bundle_dir,
                                                    allowed_callers=["ROUTER"]))
    try:
        put_study([series_json("s1")])
        fake_orthanc.resources["/instances/i1/metadata/RemoteAET"] = b"MODALITY1"
        fire_stable()
        assert jobs(module) == []
        assert any("sent by MODALITY1, not an allowed caller" in text
                   for _, text in fake_orthanc.logs)
    finally:
        module.APP.close()


def test_trigger_failure_is_logged_not_raised(plugin: ModuleType) -> None:
    fire_stable()  # the study is unknown to the fake Orthanc
    assert any(level == "error" and "could not decide" in text
               for level, text in fake_orthanc.logs)


def test_rest_routes(plugin: ModuleType) -> None:
    put_study([series_json("s1")])
    health = fake_orthanc.call_rest("/hepatica/health")
    assert health.status == 503 and b"no Hepatica worker" in health.body
    heartbeat_path(plugin.APP.config).write_text(json.dumps({"pid": 1, "time": time.time()}))
    assert fake_orthanc.call_rest("/hepatica/health").status == 200

    rerun = fake_orthanc.call_rest(f"/hepatica/studies/{STUDY_UID}/rerun", "POST")
    assert rerun.status == 200
    job_id = json.loads(rerun.body)["job"]["id"]
    one = fake_orthanc.call_rest(f"/hepatica/jobs/{job_id}")
    assert one.status == 200 and json.loads(one.body)["state"] == "queued"
    assert fake_orthanc.call_rest("/hepatica/jobs/999").status == 404
    assert fake_orthanc.call_rest("/hepatica/jobs", "POST").status == 405
    listed = fake_orthanc.call_rest("/hepatica/jobs", query={"state": "done"})
    assert json.loads(listed.body)["jobs"] == []
    assert fake_orthanc.call_rest("/hepatica/jobs", query={"state": "nope"}).status == 400
    assert fake_orthanc.call_rest("/hepatica/studies/1.2.3/rerun", "POST").status == 404

    posted = fake_orthanc.call_rest(f"/hepatica/studies/{STUDY_ID}/clinical", "POST",
                                    json.dumps({"AFP": 12.5, "BCLC": "B"}).encode())
    assert posted.status == 200
    assert json.loads(posted.body) == {"study_uid": STUDY_UID,
                                       "variables": {"AFP": 12.5, "BCLC": "B"}}
    fake_orthanc.call_rest(f"/hepatica/studies/{STUDY_UID}/clinical", "POST", b'{"AFP": 14}')
    got = fake_orthanc.call_rest(f"/hepatica/studies/{STUDY_UID}/clinical")
    assert json.loads(got.body)["variables"] == {"AFP": 14, "BCLC": "B"}
    for bad in (b"not json", b"[1, 2]", b"{}", b'{"x": [1]}', b'{"x": NaN}'):
        answer = fake_orthanc.call_rest(f"/hepatica/studies/{STUDY_UID}/clinical", "POST", bad)
        assert answer.status == 400, bad


def test_logging_bridge_maps_levels(plugin: ModuleType) -> None:
    fake_orthanc.logs.clear()
    log = logging.getLogger("plugin.somewhere")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [level for level, _ in fake_orthanc.logs] == ["info", "warning", "error"]
    assert fake_orthanc.logs[1][1] == "hepatica plugin.somewhere: w"


def test_catch_up_queues_studies_a_restart_left_unstable(plugin: ModuleType) -> None:
    app: HepaticaOrthanc = plugin.APP
    fake_orthanc.resources["/changes?last"] = {"Last": 10, "Changes": [], "Done": True}
    assert app.catch_up() == []  # first start: only notes where the log stands
    put_study([series_json("s1")])
    other = "99999999-22222222-33333333-44444444-55555555"
    fake_orthanc.resources["/series/s1"] = {"ParentStudy": STUDY_ID}
    fake_orthanc.resources["/changes?since=10&limit=1000"] = {"Done": True, "Last": 14, "Changes": [
        {"ChangeType": "NewStudy", "ID": other, "Seq": 11},
        {"ChangeType": "StableStudy", "ID": other, "Seq": 12},
        {"ChangeType": "NewSeries", "ID": "s1", "Seq": 13},
        {"ChangeType": "NewInstance", "ID": "i1", "Seq": 14}]}
    [trigger] = app.catch_up()
    assert trigger.study_uid == STUDY_UID and trigger.job is not None
    assert app.store.cursor() == 14


def test_pipeline_version_is_the_pipelines(plugin: ModuleType, bundle_dir: Path) -> None:
    from plugin.pipeline.models import installed_version

    assert plugin.APP.pipeline_version() == installed_version((bundle_dir,))


# ----------------------------------------------------------------------------- config, client
def test_orthanc_config_from_env_and_checks(tmp_path: Path) -> None:
    config = load_config(environ={"HEPATICA_ORTHANC__PASSWORD": "s3cret",
                                  "HEPATICA_ORTHANC__ALLOWED_CALLERS": "PACS,ROUTER"})
    assert config.orthanc.password == "s3cret"
    assert config.orthanc.allowed_callers == ("PACS", "ROUTER")
    assert HepaticaConfig().orthanc == OrthancConfig()
    for key, value in (("URL", "ftp://x"), ("DESCRIPTION_INCLUDE", "(unclosed"),
                       ("TIMEOUT_SECONDS", "0")):
        with pytest.raises(ValueError, match=f"orthanc.{key.lower()}"):
            load_config(environ={f"HEPATICA_ORTHANC__{key}": value})


def test_client_gives_up_after_retry_window_when_orthanc_is_down() -> None:
    slept: list[float] = []
    client = OrthancClient(f"http://127.0.0.1:{free_port()}", "u", "p", timeout=2,
                           retry_seconds=0.0, sleep=slept.append)
    with pytest.raises(OrthancUnavailable, match="gave up"):
        client.get("/system")
