"""Provider choice with fake availability lists (no GPU here), and real CPU sessions."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import write_scale_model

from inference.runtime import (
    CPU,
    CUDA,
    PROVIDERS_ENV,
    TENSORRT,
    OnnxSession,
    ProviderSpec,
    Runtime,
    Session,
    available_providers,
    choose_providers,
    create_session,
    open_session,
    register_runtime,
    runtime_for,
    unregister_runtime,
)

ALL = [TENSORRT, CUDA, CPU]
NO_ENV: dict[str, str] = {}


def names(specs: Sequence[ProviderSpec]) -> list[str]:
    return [s if isinstance(s, str) else s[0] for s in specs]


@pytest.mark.parametrize(("available", "expected"), [
    (ALL, ALL),
    ([CUDA, CPU], [CUDA, CPU]),
    (["AzureExecutionProvider", CPU], [CPU]),
    ([CPU, CUDA, TENSORRT], ALL),  # our order, not the build's
])
def test_choose_by_availability(available: list[str], expected: list[str]) -> None:
    assert names(choose_providers(available, env=NO_ENV)) == expected


def test_provider_options(tmp_path: Path) -> None:
    chosen = choose_providers(ALL, trt_cache_dir=tmp_path, fp16=True, device_id=1, env=NO_ENV)
    trt, cuda, cpu = chosen
    assert trt == (TENSORRT, {"device_id": "1", "trt_engine_cache_enable": "True",
                              "trt_engine_cache_path": str(tmp_path), "trt_fp16_enable": "True"})
    assert cuda == (CUDA, {"device_id": "1"})
    assert cpu == CPU
    default = choose_providers(ALL, env={"HEPATICA_TRT_CACHE": "/cache/trt"})[0]
    assert isinstance(default, tuple)
    assert default[1]["trt_engine_cache_path"] == "/cache/trt"
    assert default[1]["trt_fp16_enable"] == "False"


def test_disable_and_prefer() -> None:
    assert names(choose_providers(ALL, disable=[TENSORRT], env=NO_ENV)) == [CUDA, CPU]
    assert names(choose_providers(ALL, prefer=["cpu"], env=NO_ENV)) == [CPU]
    with pytest.raises(RuntimeError, match="no usable execution provider"):
        choose_providers([CPU], disable=["cpu"], env=NO_ENV)


def test_environment_overrides(caplog: pytest.LogCaptureFixture) -> None:
    assert names(choose_providers(ALL, env={PROVIDERS_ENV: "cpu"})) == [CPU]
    assert names(choose_providers(ALL, env={PROVIDERS_ENV: " CUDA , cpu "})) == [CUDA, CPU]
    with caplog.at_level(logging.WARNING):
        assert names(choose_providers([CPU], env={PROVIDERS_ENV: "tensorrt,cpu"})) == [CPU]
    assert PROVIDERS_ENV in caplog.text
    with pytest.raises(RuntimeError):
        choose_providers([CPU], env={PROVIDERS_ENV: "cuda"})


def test_real_providers_include_cpu() -> None:
    assert CPU in available_providers()


def test_cpu_session_runs_and_is_cached(tmp_path: Path) -> None:
    model = write_scale_model(tmp_path / "m.onnx", factor=3.0)
    session = create_session(model, providers=[CPU], threads=1)
    assert session.providers == (CPU,)
    x = np.arange(2 * 2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 2, 3, 4, 5)
    np.testing.assert_array_equal(session.run(x), 3.0 * x)
    assert create_session(model, providers=[CPU], threads=1) is session
    assert create_session(model, providers=[CPU], threads=2) is not session


def test_default_session_picks_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROVIDERS_ENV, "cpu")
    session = create_session(write_scale_model(tmp_path / "m.onnx"))
    assert isinstance(session, OnnxSession) and session.providers == (CPU,)


def test_replaced_file_gives_new_session(tmp_path: Path) -> None:
    model = write_scale_model(tmp_path / "m.onnx", factor=2.0)
    first = create_session(model, providers=[CPU])
    write_scale_model(model, factor=5.0)
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = create_session(model, providers=[CPU])
    assert second is not first
    assert second.run(np.ones((1, 1, 1, 1, 1), np.float32)).item() == 5.0


class _FakeSession:
    providers = ("FakeProvider",)

    def run(self, x: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
        return x


@pytest.fixture
def fake_runtime() -> Iterator[Runtime]:
    runtime = register_runtime(Runtime(
        name="fake-plan", suffixes=(".plan",), providers=("FakeProvider",),
        create=lambda path, providers, threads: _FakeSession()))
    yield runtime
    unregister_runtime("fake-plan")


def test_registry_dispatches_by_file(tmp_path: Path, fake_runtime: Runtime) -> None:
    assert runtime_for("model.onnx").name == "onnxruntime"
    assert runtime_for("engine.PLAN") is fake_runtime
    session: Session = open_session(tmp_path / "engine.plan")
    assert session.providers == ("FakeProvider",)
    onnx_session = open_session(write_scale_model(tmp_path / "m.onnx"), providers=[CPU])
    assert isinstance(onnx_session, OnnxSession)


def test_unknown_file_is_refused() -> None:
    with pytest.raises(LookupError, match=r"no runtime accepts model\.pt"):
        runtime_for("model.pt")
