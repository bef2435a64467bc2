"""Hepatica configuration: one TOML file, overridden by ``HEPATICA_*`` environment variables.

Why both: a site keeps its settings in a file under version control, while containers and
tests change one value (a port, the data directory) without rewriting that file. The
environment wins over the file so that ``docker run -e HEPATICA_LISTENER__PORT=104`` does
what it says.

Every value is checked once, here, so the rest of Hepatica can trust it; a bad value raises
:class:`ConfigError` naming the key, the value, where it came from and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "CeleryConfig",
    "ConfigError",
    "DestinationConfig",
    "HepaticaConfig",
    "ListenerConfig",
    "OrthancConfig",
    "PipelineConfig",
    "PriorsConfig",
    "StatusConfig",
    "default_config_toml",
    "env_var_name",
    "load_config",
]

ENV_PREFIX = "HEPATICA_"
CONFIG_ENV_VAR = "HEPATICA_CONFIG"
_MAX_SERIES_NUMBER = 2**31 - 1  # Series Number is IS: a signed 32-bit integer (PS3.5 6.2)


@dataclass(frozen=True)
class ListenerConfig:
    """The storage SCP that receives studies."""

    ae_title: str = "HEPATICA"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_callers: tuple[str, ...] = ()
    max_associations: int = 32
    acse_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 30.0
    dimse_timeout_seconds: float = 60.0
    quarantine_max_megabytes: int = 1024
    tls_certificate: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_require_client_certificate: bool = False


@dataclass(frozen=True)
class DestinationConfig:
    """The archive that receives Hepatica's result objects."""

    ae_title: str = "ARCHIVE"
    host: str = "127.0.0.1"
    port: int = 11113
    retries: int = 3
    backoff_seconds: float = 2.0
    enabled: bool = True
    tls_certificate: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_verify_hostname: bool = True
    redeliver_seconds: float = 60.0
    redeliver_max_seconds: float = 900.0
    delivery_attempts: int = 48
    kind: str = "c-store"
    url: str = ""
    username: str = ""
    password: str = ""
    timeout_seconds: float = 120.0


@dataclass(frozen=True)
class PipelineConfig:
    """How studies become jobs and how jobs are run."""

    stable_seconds: float = 30.0
    ready_seconds: float = 3.0
    workers: int = 1
    max_attempts: int = 3
    bundle_dirs: tuple[Path, ...] = ()
    series_number_base: int = 9900
    providers: tuple[str, ...] = ()
    phase_rules: tuple[Path, ...] = ()


@dataclass(frozen=True)
class PriorsConfig:
    """Where the patient's earlier studies are found for RECIST/mRECIST response.

    DIMSE (C-FIND, then C-MOVE to this node's own AE or C-GET) in ``hepatica serve``;
    Orthanc's REST API when running beside Orthanc (``hepatica serve --orthanc``).
    """

    enabled: bool = False
    ae_title: str = "PACS"
    host: str = "127.0.0.1"
    port: int = 104
    lookback_days: int = 730
    retrieve: str = "move"
    timeout_seconds: float = 120.0
    tls_certificate: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_verify_hostname: bool = True


@dataclass(frozen=True)
class OrthancConfig:
    """Hepatica beside an Orthanc server: which studies trigger, and how the worker reaches it.

    The plugin inside Orthanc reads the filters; the worker (``hepatica serve --orthanc``)
    reads the URL and credentials. Credentials belong in this file (kept private) or in the
    environment (``HEPATICA_ORTHANC__PASSWORD``), never in code.
    """

    url: str = "http://127.0.0.1:8042"
    username: str = ""
    password: str = ""
    timeout_seconds: float = 60.0
    retry_seconds: float = 120.0
    modalities: tuple[str, ...] = ("MR", "CT")
    body_parts: tuple[str, ...] = ()
    description_include: tuple[str, ...] = ()
    description_exclude: tuple[str, ...] = ()
    allowed_callers: tuple[str, ...] = ()
    required_metadata: str = ""
    required_label: str = ""


@dataclass(frozen=True)
class StatusConfig:
    """The node's read-only HTTP side: Prometheus ``/metrics`` and the status page.

    Loopback by default; any other address needs a user and password (basic auth), and the
    client's address must be in ``allowed_clients`` (the same rule a REST route obeys).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8470
    username: str = ""
    password: str = ""
    allowed_clients: tuple[str, ...] = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True)
class CeleryConfig:
    """Several workers on one Redis-brokered Celery queue (docs/scale_out.md)."""

    url: str = ""
    queue: str = "hepatica"
    visibility_timeout_seconds: float = 3600.0
    lock_seconds: float = 60.0


@dataclass(frozen=True)
class HepaticaConfig:
    """The whole configuration; derived locations hang off ``data_dir``."""

    listener: ListenerConfig = field(default_factory=ListenerConfig)
    destination: DestinationConfig = field(default_factory=DestinationConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    orthanc: OrthancConfig = field(default_factory=OrthancConfig)
    priors: PriorsConfig = field(default_factory=PriorsConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    celery: CeleryConfig = field(default_factory=CeleryConfig)
    data_dir: Path = Path("hepatica-data")

    @property
    def priors_dir(self) -> Path:
        return self.data_dir / "priors"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def database(self) -> Path:
        return self.data_dir / "jobs.sqlite3"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message says how to fix it."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        super().__init__(message)
        self.key = key
        self.source = source


_SECTIONS: dict[str, type[Any]] = {
    "listener": ListenerConfig,
    "destination": DestinationConfig,
    "pipeline": PipelineConfig,
    "orthanc": OrthancConfig,
    "priors": PriorsConfig,
    "status": StatusConfig,
    "celery": CeleryConfig,
}
_TOP_LEVEL_KEYS = ("data_dir",)

# One line of help per key: the example file and docs/configuration.md are built from it.
_HELP: dict[str, str] = {
    "data_dir": "Spool, results and the job database live here (relative: to this file).",
    "listener.ae_title": "AE title Hepatica answers to (1-16 printable ASCII, no backslash).",
    "listener.host": "Address to listen on; 0.0.0.0 listens on every interface.",
    "listener.port": "TCP port of the storage SCP; 0 picks a free port (tests).",
    "listener.allowed_callers": "Calling AE titles accepted; empty accepts any caller.",
    "listener.max_associations": (
        "Open connections served at once (idle ones count until a timeout closes them)."
    ),
    "listener.acse_timeout_seconds": "A connection that sends no association request is closed.",
    "listener.idle_timeout_seconds": "An association silent for this long is closed.",
    "listener.dimse_timeout_seconds": "Longest wait for the rest of a DIMSE message.",
    "listener.quarantine_max_megabytes": "Refused input kept for inspection; oldest dropped first.",
    "listener.tls_certificate": "PEM certificate (chain) of this node; set = the port speaks TLS.",
    "listener.tls_key": "PEM private key of tls_certificate (keep it readable only by Hepatica).",
    "listener.tls_ca": "PEM CA bundle that callers' certificates must chain to.",
    "listener.tls_require_client_certificate": (
        "true refuses callers without a certificate from tls_ca (mutual TLS)."
    ),
    "destination.ae_title": "AE title of the archive that receives results.",
    "destination.host": "Host name or address of the archive.",
    "destination.port": "TCP port of the archive.",
    "destination.retries": "Extra send attempts after a failed association (0 = try once).",
    "destination.backoff_seconds": "Wait before the first retry; doubled on each retry.",
    "destination.enabled": "false keeps results on disk only (results_dir) and sends nothing.",
    "destination.tls_certificate": "PEM client certificate shown to the archive (TLS, optional).",
    "destination.tls_key": "PEM private key of that certificate.",
    "destination.tls_ca": "PEM CA bundle the archive's certificate must chain to; set = TLS.",
    "destination.tls_verify_hostname": "The archive's certificate must name destination.host.",
    "destination.redeliver_seconds": (
        "Results not delivered are kept and sent again after this long; doubled each time."
    ),
    "destination.redeliver_max_seconds": "The longest wait between two deliveries.",
    "destination.delivery_attempts": (
        "Deliveries before results are left 'unsent' for `hepatica resend`; 0 = never stop."
    ),
    "destination.kind": (
        "c-store (DIMSE to ae_title@host:port), stow-rs (DICOMweb at url) or orthanc-rest (url)."
    ),
    "destination.url": (
        "stow-rs: the DICOMweb root (…/dicom-web); orthanc-rest: Orthanc's REST API."
    ),
    "destination.username": "HTTP basic-auth user for stow-rs / orthanc-rest; empty = no auth.",
    "destination.password": "Its password; prefer the environment variable to writing it here.",
    "destination.timeout_seconds": "Timeout of one HTTP request (stow-rs, orthanc-rest).",
    "status.enabled": "Serve /metrics (Prometheus) and the read-only status page.",
    "status.host": "Address of that HTTP server; other than loopback needs username/password.",
    "status.port": "Its TCP port; 0 picks a free port (tests).",
    "status.username": "HTTP basic-auth user for /metrics and the status page; empty = none.",
    "status.password": "Its password; prefer the environment variable to writing it here.",
    "status.allowed_clients": "Client addresses or networks (CIDR) allowed; empty = any.",
    "celery.url": (
        "Redis broker of the Celery queue (redis://host:6379/0); set = jobs go to workers."
    ),
    "celery.queue": "Celery queue name the node sends to and the workers consume.",
    "celery.visibility_timeout_seconds": (
        "A job not acknowledged this long (its worker died) goes to another worker."
    ),
    "celery.lock_seconds": (
        "Expiry of a study's lock, renewed while its job runs; a dead worker's lapses."
    ),
    "pipeline.stable_seconds": "A study is complete when no new instance came for this long.",
    "pipeline.ready_seconds": (
        "Start sooner: this long after the last instance when an installed segmentation "
        "bundle finds every phase it needs (>= stable_seconds: off)."
    ),
    "pipeline.workers": "Number of jobs run in parallel.",
    "pipeline.max_attempts": "Attempts per job before it is marked dead.",
    "pipeline.bundle_dirs": "Extra folders searched for model bundles.",
    "pipeline.series_number_base": "Result series are numbered from here (never random).",
    "pipeline.providers": "ONNX Runtime providers, in order; empty = best of TensorRT, CUDA, CPU.",
    "pipeline.phase_rules": (
        "Site phase-rule files (TOML) extending the shipped dicom_io/phase_rules.toml."
    ),
    "priors.enabled": "Find the patient's earlier studies and report RECIST 1.1 / mRECIST.",
    "priors.ae_title": "AE title of the archive queried for priors (C-FIND / C-MOVE / C-GET).",
    "priors.host": "Host name or address of that archive.",
    "priors.port": "Its DICOM port.",
    "priors.lookback_days": "Only studies this many days before the current one are priors.",
    "priors.retrieve": (
        "move: C-MOVE to this node's listener AE (the archive must know it); get: C-GET."
    ),
    "priors.timeout_seconds": "Timeout of one query or retrieve step.",
    "priors.tls_certificate": "PEM client certificate shown to that archive (TLS, optional).",
    "priors.tls_key": "PEM private key of that certificate.",
    "priors.tls_ca": "PEM CA bundle the archive's certificate must chain to; set = TLS.",
    "priors.tls_verify_hostname": "The archive's certificate must name priors.host.",
    "orthanc.url": "Orthanc's REST API, as the worker reaches it (`hepatica serve --orthanc`).",
    "orthanc.username": "HTTP basic-auth user for Orthanc's REST API; empty = no auth.",
    "orthanc.password": "Its password; prefer the environment variable to writing it here.",
    "orthanc.timeout_seconds": "Timeout of one REST request to Orthanc.",
    "orthanc.retry_seconds": "How long the worker keeps retrying while Orthanc is unreachable.",
    "orthanc.modalities": "A study triggers only with a series of one of these; empty = any.",
    "orthanc.body_parts": "Body Part Examined values accepted (any series); empty = any.",
    "orthanc.description_include": (
        "Regexes, any case: study or series description must match one; [] = any."
    ),
    "orthanc.description_exclude": (
        "Regexes, any case: a study whose description matches one never triggers."
    ),
    "orthanc.allowed_callers": "Calling AE titles whose studies trigger; empty = any sender.",
    "orthanc.required_metadata": "Study metadata a routing rule must set; empty = not needed.",
    "orthanc.required_label": (
        "Study label (Orthanc >= 1.12) a routing rule must set; empty = none."
    ),
}


@dataclass(frozen=True)
class _Raw:
    """A value as read, with where it came from, before conversion."""

    value: object
    source: str
    from_env: bool
    base_dir: Path


def env_var_name(key: str) -> str:
    """``listener.port`` → ``HEPATICA_LISTENER__PORT``; ``data_dir`` → ``HEPATICA_DATA_DIR``."""
    return ENV_PREFIX + key.replace(".", "__").upper()


def load_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> HepaticaConfig:
    """Read ``path`` (or ``$HEPATICA_CONFIG``, or nothing), apply the environment, validate."""
    env = os.environ if environ is None else environ
    raw: dict[str, _Raw] = {}
    config_path = _config_path(path, env)
    if config_path is not None:
        raw.update(_read_file(config_path))
    raw.update(_read_env(env))
    return _build(raw)


def _config_path(path: Path | None, env: Mapping[str, str]) -> Path | None:
    """The file to read: the argument wins over ``$HEPATICA_CONFIG``; none is fine."""
    if path is not None:
        return Path(path).expanduser()
    named = env.get(CONFIG_ENV_VAR, "").strip()
    if not named:
        return None
    return Path(named).expanduser()


def _read_file(path: Path) -> dict[str, _Raw]:
    """Parse the TOML file and flatten it to ``section.key`` entries, rejecting unknown names."""
    source = str(path)
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {source} does not exist; write one with "
            "`hepatica config --example > hepatica.toml` or unset HEPATICA_CONFIG",
            source=source,
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as error:
        message = f"cannot read configuration file {source}: {error}"
        raise ConfigError(message, source=source) from error
    base_dir = path.resolve().parent
    return _flatten(document, source, base_dir)


def _flatten(document: Mapping[str, Any], source: str, base_dir: Path) -> dict[str, _Raw]:
    """Turn ``{"listener": {"port": 1}}`` into ``{"listener.port": _Raw(1, ...)}``."""
    flat: dict[str, _Raw] = {}
    for name, value in document.items():
        if name in _TOP_LEVEL_KEYS:
            flat[name] = _Raw(value, source, False, base_dir)
        elif name in _SECTIONS:
            if not isinstance(value, dict):
                raise _error(name, value, source, "a table, e.g. [" + name + "]")
            for key, item in value.items():
                _check_known(name, key, source)
                flat[f"{name}.{key}"] = _Raw(item, source, False, base_dir)
        else:
            raise _unknown(name, [*_TOP_LEVEL_KEYS, *_SECTIONS], source, "key or table")
    return flat


def _read_env(env: Mapping[str, str]) -> dict[str, _Raw]:
    """Collect ``HEPATICA_DATA_DIR`` and ``HEPATICA_<SECTION>__<KEY>`` overrides.

    Other ``HEPATICA_*`` names without a double underscore (``HEPATICA_CONFIG``, a log level
    another module reads) are not configuration keys and are left alone; a double-underscore
    name that matches no key is an error, because a typo there would otherwise be silent.
    """
    flat: dict[str, _Raw] = {}
    cwd = Path.cwd()
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest in _TOP_LEVEL_KEYS:
            flat[rest] = _Raw(value, name, True, cwd)
        elif "__" in rest:
            section, _, key = rest.partition("__")
            if section not in _SECTIONS:
                raise _unknown(section, list(_SECTIONS), name, "section")
            _check_known(section, key, name)
            flat[f"{section}.{key}"] = _Raw(value, name, True, cwd)
    return flat


def _check_known(section: str, key: str, source: str) -> None:
    valid = [item.name for item in fields(_SECTIONS[section])]
    if key not in valid:
        raise _unknown(key, valid, source, "key", section=section)


def _unknown(name: str, valid: list[str], source: str, what: str, section: str = "") -> ConfigError:
    """An unknown name, with the nearest valid one suggested (typos are the usual cause).

    Names are compared without their section, which would otherwise make any key look close.
    """
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
    listed = ", ".join(prefix + item for item in valid)
    return ConfigError(
        f"unknown {what} '{prefix}{name}' (from {source}); {hint}valid: {listed}",
        key=prefix + name,
        source=source,
    )


def _error(key: str, value: object, source: str, allowed: str) -> ConfigError:
    return ConfigError(
        f"{key} = {value!r} (from {source}) is invalid: must be {allowed}", key=key, source=source
    )


def _build(raw: Mapping[str, _Raw]) -> HepaticaConfig:
    """Convert and validate every value present; absent keys keep their defaults."""
    sections = {name: _build_section(name, cls, raw) for name, cls in _SECTIONS.items()}
    data_dir = _convert("data_dir", Path, raw.get("data_dir"), Path("hepatica-data"))
    config = HepaticaConfig(data_dir=data_dir, **sections)
    _check_together(config, raw)
    return config


def _check_together(config: HepaticaConfig, raw: Mapping[str, _Raw]) -> None:
    """Rules between keys: an HTTP destination needs its URL; a status server reachable from
    other machines needs credentials (metrics and job states are not for anyone)."""
    d, s = config.destination, config.status
    if d.kind != "c-store" and not d.url:
        source = raw["destination.kind"].source if "destination.kind" in raw else "defaults"
        raise ConfigError(f"destination.kind = {d.kind!r} (from {source}) needs destination.url "
                          "(the DICOMweb root or Orthanc's REST API)", key="destination.url",
                          source=source)
    if s.enabled and not _is_loopback(s.host) and not (s.username and s.password):
        source = raw["status.host"].source if "status.host" in raw else "defaults"
        raise ConfigError(f"status.host = {s.host!r} (from {source}) is reachable from other "
                          "machines: set status.username and status.password (or "
                          "HEPATICA_STATUS__PASSWORD)", key="status.host", source=source)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _build_section(name: str, cls: type[Any], raw: Mapping[str, _Raw]) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, object] = {}
    for item in fields(cls):
        key = f"{name}.{item.name}"
        values[item.name] = _convert(key, hints[item.name], raw.get(key), item.default)
    return cls(**values)


def _convert(key: str, kind: object, raw: _Raw | None, default: object) -> Any:
    """Parse one value to its field type, check it, and resolve relative paths."""
    if raw is None:
        value = default
        base_dir = Path.cwd()
    else:
        value = _parse(key, kind, raw)
        base_dir = raw.base_dir
    value = _resolve_paths(value, base_dir)
    if raw is not None:
        problem = _CHECKS.get(key, _no_check)(value)
        if problem is not None:
            raise _error(key, raw.value, raw.source, problem)
    return value


def _resolve_paths(value: object, base_dir: Path) -> object:
    """Make paths absolute: relative to the config file, or to the CWD for env and defaults."""
    if isinstance(value, Path):
        return base_dir / value.expanduser()
    if isinstance(value, tuple) and all(isinstance(item, Path) for item in value):
        return tuple(base_dir / item.expanduser() for item in value)
    return value


def _parse(key: str, kind: object, raw: _Raw) -> object:
    parser = _PARSERS[kind]
    parsed = parser(raw.value, raw.from_env)
    if parsed is _INVALID:
        raise _error(key, raw.value, raw.source, _TYPE_NAMES[kind])
    return parsed


_INVALID = object()


def _parse_str(value: object, from_env: bool) -> object:
    return value if isinstance(value, str) else _INVALID


def _parse_int(value: object, from_env: bool) -> object:
    if from_env and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return _INVALID
    # bool is an int subclass in Python, but `port = true` is a mistake, not 1.
    return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID


def _parse_float(value: object, from_env: bool) -> object:
    if from_env and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return _INVALID
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        return _INVALID
    return number if math.isfinite(number) else _INVALID


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(value: object, from_env: bool) -> object:
    if from_env and isinstance(value, str):
        word = value.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else _INVALID
    return value if isinstance(value, bool) else _INVALID


def _parse_path(value: object, from_env: bool) -> object:
    return Path(value) if isinstance(value, str) and value.strip() else _INVALID


def _split_env_list(value: str) -> list[str]:
    """Environment lists are comma-separated; blanks are dropped so ``A, B,`` is A and B."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _parse_str_tuple(value: object, from_env: bool) -> object:
    if from_env and isinstance(value, str):
        return tuple(_split_env_list(value))
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    return _INVALID


def _parse_path_tuple(value: object, from_env: bool) -> object:
    items = _parse_str_tuple(value, from_env)
    if not isinstance(items, tuple) or not all(item.strip() for item in items):
        return _INVALID
    return tuple(Path(item) for item in items)


_PARSERS: dict[object, Callable[[object, bool], object]] = {
    str: _parse_str,
    int: _parse_int,
    float: _parse_float,
    bool: _parse_bool,
    Path: _parse_path,
    tuple[str, ...]: _parse_str_tuple,
    tuple[Path, ...]: _parse_path_tuple,
}
_TYPE_NAMES: dict[object, str] = {
    str: "a string",
    int: "an integer",
    float: "a finite number",
    bool: "true or false (environment: 1/0, true/false, yes/no, on/off)",
    Path: "a non-empty path string",
    tuple[str, ...]: "a list of strings (environment: comma-separated)",
    tuple[Path, ...]: "a list of non-empty path strings (environment: comma-separated)",
}


def _ae_title_problem(value: str) -> str | None:
    """PS3.5 6.2 AE: up to 16 characters of the default repertoire, no backslash, not blank."""
    ok = (
        0 < len(value) <= 16
        and value.strip() != ""
        and all(" " <= char <= "~" and char != "\\" for char in value)
    )
    return None if ok else "1-16 printable ASCII characters, no backslash, not all spaces"


def _check_ae(value: object) -> str | None:
    return _ae_title_problem(value) if isinstance(value, str) else "a string"


def _check_callers(value: object) -> str | None:
    if not isinstance(value, tuple):
        return "a list of AE titles"
    for title in value:
        problem = _check_ae(title)
        if problem is not None:
            return f"a list of AE titles, each {problem} (bad: {title!r})"
    return None


def _check_host(value: object) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a non-empty host name or address"


def _check_names(value: object) -> str | None:
    ok = isinstance(value, tuple) and all(isinstance(v, str) and v.strip() for v in value)
    return None if ok else "a list of non-empty provider names"


def _check_url(value: object) -> str | None:
    scheme, _, rest = value.partition("://") if isinstance(value, str) else ("", "", "")
    ok = scheme in ("http", "https") and rest.strip("/") != ""
    return None if ok else "an http:// or https:// URL with a host"


def _check_regexes(value: object) -> str | None:
    if not isinstance(value, tuple):
        return "a list of regular expressions"
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"a list of valid regular expressions (bad: {pattern!r}: {exc})"
    return None


def _check_words(value: object) -> str | None:
    ok = isinstance(value, tuple) and all(isinstance(v, str) and v.strip() for v in value)
    return None if ok else "a list of non-empty strings"


def _int_range(low: int, high: int | None, allowed: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        ok = isinstance(value, int) and value >= low and (high is None or value <= high)
        return None if ok else allowed

    return check


def _positive(value: object) -> str | None:
    return None if isinstance(value, float) and value > 0 else "a number greater than 0"


def _non_negative(value: object) -> str | None:
    return None if isinstance(value, float) and value >= 0 else "a number of at least 0"


def _no_check(value: object) -> str | None:
    return None


def _check_optional_url(value: object) -> str | None:
    return None if value == "" else _check_url(value)


def _check_redis_url(value: object) -> str | None:
    ok = value == "" or (isinstance(value, str) and value.partition("://")[0] in _REDIS_SCHEMES
                         and value.partition("://")[2].strip("/") != "")
    return None if ok else "empty, or a redis:// (rediss://, celery://) URL with a host"


_REDIS_SCHEMES = ("redis", "rediss", "celery")
DESTINATION_KINDS = ("c-store", "stow-rs", "orthanc-rest")


def _check_networks(value: object) -> str | None:
    import ipaddress

    if not isinstance(value, tuple):
        return "a list of addresses or CIDR networks"
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"a list of addresses or CIDR networks (bad: {item!r})"
    return None


def _check_pem_file(value: object) -> str | None:
    ok = value == "" or (isinstance(value, str) and Path(value).expanduser().is_file())
    return None if ok else "empty, or the path of an existing PEM file"


_PORT = _int_range(0, 65535, "an integer from 0 to 65535 (0 picks a free port)")
_CHECKS: dict[str, Callable[[object], str | None]] = {
    "listener.ae_title": _check_ae,
    "listener.host": _check_host,
    "listener.port": _PORT,
    "listener.allowed_callers": _check_callers,
    "listener.max_associations": _int_range(1, 1000, "an integer from 1 to 1000"),
    "listener.acse_timeout_seconds": _positive,
    "listener.idle_timeout_seconds": _positive,
    "listener.dimse_timeout_seconds": _positive,
    "listener.quarantine_max_megabytes": _int_range(0, None, "an integer of at least 0"),
    "listener.tls_certificate": _check_pem_file,
    "listener.tls_key": _check_pem_file,
    "listener.tls_ca": _check_pem_file,
    "destination.tls_certificate": _check_pem_file,
    "destination.tls_key": _check_pem_file,
    "destination.tls_ca": _check_pem_file,
    "priors.tls_certificate": _check_pem_file,
    "priors.tls_key": _check_pem_file,
    "priors.tls_ca": _check_pem_file,
    "destination.ae_title": _check_ae,
    "destination.host": _check_host,
    "destination.port": _PORT,
    "destination.retries": _int_range(0, None, "an integer of at least 0"),
    "destination.backoff_seconds": _non_negative,
    "destination.redeliver_seconds": _positive,
    "destination.redeliver_max_seconds": _positive,
    "destination.delivery_attempts": _int_range(0, None, "an integer of at least 0"),
    "destination.kind": lambda v: None if v in DESTINATION_KINDS else " or ".join(
        DESTINATION_KINDS),
    "destination.url": _check_optional_url,
    "destination.timeout_seconds": _positive,
    "status.host": _check_host,
    "status.port": _PORT,
    "status.allowed_clients": _check_networks,
    "celery.url": _check_redis_url,
    "celery.queue": lambda v: None if isinstance(v, str) and v.strip() else "a non-empty name",
    "celery.visibility_timeout_seconds": _positive,
    "celery.lock_seconds": _positive,
    "pipeline.stable_seconds": _positive,
    "pipeline.ready_seconds": _non_negative,
    "pipeline.workers": _int_range(1, None, "an integer of at least 1"),
    "pipeline.max_attempts": _int_range(1, None, "an integer of at least 1"),
    "pipeline.series_number_base": _int_range(
        1, _MAX_SERIES_NUMBER, f"an integer from 1 to {_MAX_SERIES_NUMBER}"
    ),
    "pipeline.providers": _check_names,
    "orthanc.url": _check_url,
    "orthanc.timeout_seconds": _positive,
    "orthanc.retry_seconds": _non_negative,
    "orthanc.modalities": _check_words,
    "orthanc.body_parts": _check_words,
    "orthanc.description_include": _check_regexes,
    "orthanc.description_exclude": _check_regexes,
    "orthanc.allowed_callers": _check_callers,
    "priors.ae_title": _check_ae,
    "priors.host": _check_host,
    "priors.port": _int_range(1, 65535, "an integer from 1 to 65535"),
    "priors.lookback_days": _int_range(1, None, "an integer of at least 1"),
    "priors.retrieve": lambda v: None if v in ("move", "get") else "move or get",
    "priors.timeout_seconds": _positive,
}


def default_config_toml() -> str:
    """An example file with every key at its default, for docs and ``hepatica config --example``.

    Built from the dataclasses and ``_HELP`` so that it cannot drift from the code; a test
    loads it back and compares with the defaults.
    """
    lines = [
        "# Hepatica configuration. Every key is shown with its default value.",
        "# Any key can be overridden by an environment variable, named on the line above it;",
        "# the environment wins over this file. Lists in the environment are comma-separated.",
        "# Relative paths are resolved against the directory of this file.",
        "# RESEARCH USE ONLY — not for diagnostic use.",
        "",
        *_key_lines("data_dir", Path("hepatica-data")),
    ]
    for name, cls in _SECTIONS.items():
        lines += ["", f"[{name}]"]
        for item in fields(cls):
            lines += _key_lines(f"{name}.{item.name}", item.default)
    return "\n".join(lines) + "\n"


def _key_lines(key: str, default: object) -> list[str]:
    short = key.rpartition(".")[2]
    return [
        f"# {_HELP[key]}",
        f"# env: {env_var_name(key)}",
        f"{short} = {_toml_value(default)}",
    ]


def _toml_value(value: object) -> str:
    """TOML literal for the few types the configuration uses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")
