"""Runtimes that execute bundle model files, and the ONNX Runtime one with its provider choice.

Runtimes register themselves here and say which files and execution providers they accept, so
that adding another (a Triton client, a plain TensorRT engine) is a new module calling
``register_runtime``, not an ``if`` in the pipeline. ONNX Runtime is registered below; it picks
TensorRT → CUDA → CPU by what the installed build offers, and keeps one session per model and
provider list, because building a session (and a TensorRT engine above all) costs far more than
running it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

__all__ = [
    "CPU",
    "CUDA",
    "DEFAULT_PREFERENCE",
    "PROVIDERS_ENV",
    "TENSORRT",
    "OnnxSession",
    "ProviderSpec",
    "Runtime",
    "Session",
    "available_providers",
    "choose_providers",
    "clear_session_cache",
    "create_session",
    "open_session",
    "register_runtime",
    "registered_runtimes",
    "runtime_for",
    "unregister_runtime",
]

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_PREFERENCE = (TENSORRT, CUDA, CPU)
PROVIDERS_ENV = "HEPATICA_PROVIDERS"
TRT_CACHE_ENV = "HEPATICA_TRT_CACHE"
_ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}

ProviderSpec = str | tuple[str, dict[str, str]]
FloatArray = npt.NDArray[np.float32]

log = logging.getLogger(__name__)


class Session(Protocol):
    """What inference code needs from any runtime's loaded model."""

    @property
    def providers(self) -> tuple[str, ...]: ...

    def run(self, x: FloatArray) -> FloatArray: ...


@dataclass(frozen=True)
class Runtime:
    """A registered runtime: the model-file suffixes and providers it accepts, and a factory."""

    name: str
    suffixes: tuple[str, ...]
    providers: tuple[str, ...]
    create: Callable[[Path, Sequence[ProviderSpec] | None, int | None], Session]

    def accepts(self, path: str | Path) -> bool:
        """Whether this runtime can load ``path`` (by its suffix)."""
        return Path(path).suffix.lower() in self.suffixes


_RUNTIMES: dict[str, Runtime] = {}


def register_runtime(runtime: Runtime) -> Runtime:
    """Add (or replace, by name) a runtime; later registrations are tried first."""
    _RUNTIMES.pop(runtime.name, None)
    _RUNTIMES[runtime.name] = runtime
    return runtime


def unregister_runtime(name: str) -> None:
    """Remove a runtime by name (a no-op when absent)."""
    _RUNTIMES.pop(name, None)


def registered_runtimes() -> tuple[Runtime, ...]:
    """Registered runtimes, most recently registered first."""
    return tuple(reversed(_RUNTIMES.values()))


def runtime_for(path: str | Path) -> Runtime:
    """The runtime that accepts ``path``; ``LookupError`` naming the file when none does."""
    for runtime in registered_runtimes():
        if runtime.accepts(path):
            return runtime
    known = ", ".join(f"{r.name} {r.suffixes}" for r in registered_runtimes())
    raise LookupError(f"no runtime accepts {path} (registered: {known})")


def open_session(path: str | Path, providers: Sequence[ProviderSpec] | None = None,
                 threads: int | None = None) -> Session:
    """Load a model file with whichever registered runtime accepts it."""
    return runtime_for(path).create(Path(path), providers, threads)


def available_providers() -> list[str]:
    """Execution providers the installed onnxruntime build offers on this machine."""
    return list(ort.get_available_providers())


def choose_providers(available: Sequence[str], prefer: Sequence[str] = DEFAULT_PREFERENCE,
                     disable: Sequence[str] = (), *, trt_cache_dir: str | Path | None = None,
                     fp16: bool = False, device_id: int = 0,
                     env: Mapping[str, str] | None = None) -> list[ProviderSpec]:
    """Order the preferred providers that are available, with their options.

    ``HEPATICA_PROVIDERS`` (comma list of full names or tensorrt/trt/cuda/cpu) replaces
    ``prefer``, so an operator can force CPU on a GPU node, or skip TensorRT while its engine
    would take minutes to build. fp16 is opt-in: it moves probabilities near the argmax border.
    """
    environ = os.environ if env is None else env
    forced = _parse_provider_list(environ.get(PROVIDERS_ENV, ""))
    order = forced or [_canonical(p) for p in prefer]
    skipped = {_canonical(p) for p in disable}
    chosen = [p for p in order if p in available and p not in skipped]
    if forced and len(chosen) < len(forced):
        log.warning("%s=%s: using %s of the available %s", PROVIDERS_ENV,
                    environ.get(PROVIDERS_ENV), chosen, list(available))
    if not chosen:
        raise RuntimeError(f"no usable execution provider: wanted {order}, disabled "
                           f"{sorted(skipped)}, available {list(available)}")
    cache = Path(trt_cache_dir or environ.get(TRT_CACHE_ENV) or _default_trt_cache())
    return [_with_options(p, cache, fp16, device_id) for p in chosen]


def _parse_provider_list(text: str) -> list[str]:
    return [_canonical(part.strip()) for part in text.split(",") if part.strip()]


def _canonical(name: str) -> str:
    return _ALIASES.get(name.lower(), name)


def _default_trt_cache() -> Path:
    return Path.home() / ".cache" / "hepatica" / "tensorrt"


def _with_options(provider: str, cache: Path, fp16: bool, device_id: int) -> ProviderSpec:
    """Attach options: a TensorRT engine cache (engines take minutes to build) and fp16 flag;
    the CUDA device. Values are strings because that is what ONNX Runtime parses."""
    if provider == TENSORRT:
        return provider, {"device_id": str(device_id), "trt_engine_cache_enable": "True",
                          "trt_engine_cache_path": str(cache),
                          "trt_fp16_enable": "True" if fp16 else "False"}
    if provider == CUDA:
        return provider, {"device_id": str(device_id)}
    return provider


class OnnxSession:
    """One ONNX Runtime session for a single-input, single-output model (first output used)."""

    def __init__(self, path: Path, providers: Sequence[ProviderSpec],
                 threads: int | None = None) -> None:
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        _make_cache_dirs(providers)
        self.path = path
        self._session = ort.InferenceSession(str(path), sess_options=options,
                                             providers=list(providers))
        self.input_name: str = self._session.get_inputs()[0].name
        self.output_name: str = self._session.get_outputs()[0].name

    @property
    def providers(self) -> tuple[str, ...]:
        """Providers the session actually runs on (ONNX Runtime drops unusable ones)."""
        return tuple(self._session.get_providers())

    def run(self, x: FloatArray) -> FloatArray:
        """Run the model on one batch ``[B, C, z, y, x]``; returns its first output."""
        feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        result = self._session.run([self.output_name], feed)[0]
        return np.asarray(result, dtype=np.float32)

    def __repr__(self) -> str:
        return f"OnnxSession({self.path.name!r}, providers={self.providers})"


def _make_cache_dirs(providers: Sequence[ProviderSpec]) -> None:
    for spec in providers:
        if isinstance(spec, tuple) and "trt_engine_cache_path" in spec[1]:
            Path(spec[1]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)


_SessionKey = tuple[str, int, tuple[tuple[str, tuple[tuple[str, str], ...]], ...], int | None]
_SESSIONS: dict[_SessionKey, OnnxSession] = {}
_SESSIONS_LOCK = threading.Lock()


def create_session(onnx_path: str | Path, providers: Sequence[ProviderSpec] | None = None,
                   threads: int | None = None) -> OnnxSession:
    """A cached ONNX Runtime session: created once per (file, providers, threads) and reused.

    The key includes the file's modification time so that a bundle replaced in place is
    reloaded rather than served stale.
    """
    path = Path(onnx_path).resolve()
    chosen = list(providers) if providers is not None else choose_providers(
        available_providers())
    key = (str(path), path.stat().st_mtime_ns, _providers_key(chosen), threads)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = OnnxSession(path, chosen, threads)
            _SESSIONS[key] = session
            log.info("loaded %s on %s", path, session.providers)
        return session


def _providers_key(
        providers: Sequence[ProviderSpec]) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    def one(spec: ProviderSpec) -> tuple[str, tuple[tuple[str, str], ...]]:
        if isinstance(spec, str):
            return spec, ()
        return spec[0], tuple(sorted((str(k), str(v)) for k, v in spec[1].items()))
    return tuple(one(spec) for spec in providers)


def clear_session_cache() -> None:
    """Forget cached sessions (tests; or to free GPU memory after unloading a bundle)."""
    with _SESSIONS_LOCK:
        _SESSIONS.clear()


def _create_onnx(path: Path, providers: Sequence[ProviderSpec] | None,
                 threads: int | None) -> Session:
    return create_session(path, providers, threads)


register_runtime(Runtime(name="onnxruntime", suffixes=(".onnx",), providers=DEFAULT_PREFERENCE,
                         create=_create_onnx))
