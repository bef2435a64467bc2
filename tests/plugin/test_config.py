"""Configuration: defaults, file + environment, and an error that names key and source."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from plugin.node.config import (
    ConfigError,
    DestinationConfig,
    HepaticaConfig,
    ListenerConfig,
    PipelineConfig,
    default_config_toml,
    env_var_name,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hepatica.toml"
    path.write_text(text, encoding="utf-8")
    return path


def expected_defaults(base: Path) -> HepaticaConfig:
    return HepaticaConfig(data_dir=base / "hepatica-data")


def test_no_file_no_env_gives_defaults_under_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config == expected_defaults(tmp_path)
    assert config.spool_dir == tmp_path / "hepatica-data" / "spool"
    assert config.results_dir == tmp_path / "hepatica-data" / "results"
    assert config.database == tmp_path / "hepatica-data" / "jobs.sqlite3"


def test_example_toml_loads_back_to_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, default_config_toml())
    assert load_config(path, environ={}) == expected_defaults(tmp_path)


def test_example_toml_shows_every_key_and_its_env_var() -> None:
    text = default_config_toml()
    for section, cls in (
        ("listener", ListenerConfig),
        ("destination", DestinationConfig),
        ("pipeline", PipelineConfig),
    ):
        assert f"[{section}]" in text
        for name in cls.__dataclass_fields__:
            assert re.search(rf"^{name} = ", text, re.MULTILINE), name
            assert env_var_name(f"{section}.{name}") in text
    assert "HEPATICA_DATA_DIR" in text


def test_docs_embed_the_example_and_every_env_var() -> None:
    docs = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert default_config_toml() in docs, "regenerate docs/configuration.md from the example"
    for name in re.findall(r"# env: (\S+)", default_config_toml()):
        assert f"`{name}`" in docs, name


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        data_dir = "/srv/hepatica"
        [listener]
        ae_title = "LIVER"
        port = 104
        allowed_callers = ["PACS", "ORTHANC"]
        [destination]
        enabled = false
        backoff_seconds = 0
        [pipeline]
        stable_seconds = 5
        providers = ["CPUExecutionProvider"]
        """,
    )
    config = load_config(path, environ={})
    assert config.data_dir == Path("/srv/hepatica")
    assert config.listener == ListenerConfig("LIVER", "127.0.0.1", 104, ("PACS", "ORTHANC"))
    assert config.destination == replace(DestinationConfig(), enabled=False, backoff_seconds=0.0)
    assert config.pipeline.stable_seconds == 5.0
    assert isinstance(config.pipeline.stable_seconds, float)
    assert config.pipeline.providers == ("CPUExecutionProvider",)


def test_environment_wins_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[listener]\nport = 104\nae_title = 'FILE'\n")
    environ = {
        "HEPATICA_LISTENER__PORT": "0",
        "HEPATICA_LISTENER__ALLOWED_CALLERS": "PACS, ORTHANC,",
        "HEPATICA_PIPELINE__STABLE_SECONDS": "0.5",
        "HEPATICA_DESTINATION__ENABLED": "no",
        "HEPATICA_PIPELINE__WORKERS": " 4 ",
        "HEPATICA_LOG_LEVEL": "debug",  # not a configuration key: ignored
        "PATH": "/usr/bin",
    }
    config = load_config(path, environ=environ)
    assert config.listener.port == 0
    assert config.listener.ae_title == "FILE"
    assert config.listener.allowed_callers == ("PACS", "ORTHANC")
    assert config.pipeline.stable_seconds == 0.5
    assert config.pipeline.workers == 4
    assert config.destination.enabled is False


def test_empty_env_list_means_empty(tmp_path: Path) -> None:
    path = write(tmp_path, "[listener]\nallowed_callers = ['PACS']\n")
    config = load_config(path, environ={"HEPATICA_LISTENER__ALLOWED_CALLERS": ""})
    assert config.listener.allowed_callers == ()


def test_hepatica_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[pipeline]\nworkers = 3\n")
    assert load_config(environ={"HEPATICA_CONFIG": str(path)}).pipeline.workers == 3
    other = tmp_path / "other.toml"
    other.write_text("[pipeline]\nworkers = 5\n", encoding="utf-8")
    explicit = load_config(other, environ={"HEPATICA_CONFIG": str(path)})
    assert explicit.pipeline.workers == 5


def test_relative_paths_resolve_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.chdir(tmp_path)
    path = write(etc, "data_dir = 'data'\n[pipeline]\nbundle_dirs = ['bundles', '/opt/b']\n")
    config = load_config(Path("etc/hepatica.toml"), environ={})
    assert config.data_dir == etc / "data"
    assert config.pipeline.bundle_dirs == (etc / "bundles", Path("/opt/b"))
    assert path.exists()


def test_relative_env_paths_resolve_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.chdir(tmp_path)
    path = write(etc, "data_dir = 'data'\n")
    environ = {"HEPATICA_DATA_DIR": "env-data", "HEPATICA_PIPELINE__BUNDLE_DIRS": "a,b"}
    config = load_config(path, environ=environ)
    assert config.data_dir == tmp_path / "env-data"
    assert config.pipeline.bundle_dirs == (tmp_path / "a", tmp_path / "b")


# (toml body, key named in the error, what the message must also mention)
FILE_ERRORS = [
    ("[listener]\nport = 70000\n", "listener.port", "0 to 65535"),
    ("[listener]\nport = -1\n", "listener.port", "0 to 65535"),
    ("[listener]\nport = '104'\n", "listener.port", "an integer"),
    ("[listener]\nport = true\n", "listener.port", "an integer"),
    ("[listener]\nae_title = ''\n", "listener.ae_title", "1-16"),
    ("[listener]\nae_title = 'SEVENTEEN_CHARS_X'\n", "listener.ae_title", "1-16"),
    ("[listener]\nae_title = '    '\n", "listener.ae_title", "not all spaces"),
    ("[listener]\nae_title = 'A\\\\B'\n", "listener.ae_title", "no backslash"),
    ('[listener]\nae_title = "A\\tB"\n', "listener.ae_title", "printable"),
    ("[listener]\nallowed_callers = ['OK', '']\n", "listener.allowed_callers", "AE title"),
    ("[listener]\nallowed_callers = 'PACS'\n", "listener.allowed_callers", "list"),
    ("[listener]\nhost = ' '\n", "listener.host", "non-empty"),
    ("[destination]\nretries = -1\n", "destination.retries", "at least 0"),
    ("[destination]\nbackoff_seconds = -0.5\n", "destination.backoff_seconds", "at least 0"),
    ("[destination]\nenabled = 'yes'\n", "destination.enabled", "true or false"),
    ("[destination]\nport = 65536\n", "destination.port", "0 to 65535"),
    ("[pipeline]\nstable_seconds = 0\n", "pipeline.stable_seconds", "greater than 0"),
    ("[pipeline]\nstable_seconds = nan\n", "pipeline.stable_seconds", "finite"),
    ("[pipeline]\nworkers = 0\n", "pipeline.workers", "at least 1"),
    ("[pipeline]\nmax_attempts = 0\n", "pipeline.max_attempts", "at least 1"),
    ("[pipeline]\nseries_number_base = 0\n", "pipeline.series_number_base", "from 1"),
    ("[pipeline]\nbundle_dirs = [1]\n", "pipeline.bundle_dirs", "path"),
    ("[pipeline]\nproviders = ['']\n", "pipeline.providers", "non-empty"),
    ("data_dir = 3\n", "data_dir", "path"),
    ("listener = 3\n", "listener", "table"),
]


@pytest.mark.parametrize(("body", "key", "allowed"), FILE_ERRORS)
def test_file_errors_name_key_value_source_and_rule(
    tmp_path: Path, body: str, key: str, allowed: str
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert key in message
    assert str(path) in message
    assert allowed in message
    assert caught.value.key == key
    assert caught.value.source == str(path)


ENV_ERRORS = [
    ("HEPATICA_LISTENER__PORT", "eleven", "listener.port", "an integer"),
    ("HEPATICA_LISTENER__PORT", "", "listener.port", "an integer"),
    ("HEPATICA_LISTENER__PORT", "99999", "listener.port", "0 to 65535"),
    ("HEPATICA_LISTENER__ALLOWED_CALLERS", "PACS,WAY_TOO_LONG_AE_TITLE", "allowed_callers", "1-16"),
    ("HEPATICA_DESTINATION__ENABLED", "maybe", "destination.enabled", "true or false"),
    ("HEPATICA_PIPELINE__STABLE_SECONDS", "-1", "pipeline.stable_seconds", "greater than 0"),
    ("HEPATICA_PIPELINE__STABLE_SECONDS", "inf", "pipeline.stable_seconds", "finite"),
    ("HEPATICA_PIPELINE__WORKERS", "1.5", "pipeline.workers", "an integer"),
    ("HEPATICA_DATA_DIR", " ", "data_dir", "path"),
]


@pytest.mark.parametrize(("name", "value", "key", "allowed"), ENV_ERRORS)
def test_env_errors_name_the_variable(name: str, value: str, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={name: value})
    message = str(caught.value)
    assert key in message
    assert name in message
    assert repr(value) in message
    assert allowed in message


@pytest.mark.parametrize(
    ("body", "named", "suggestion"),
    [
        ("[listener]\nprot = 104\n", "listener.prot", "listener.port"),
        ("[listner]\nport = 104\n", "listner", "listener"),
        ("datadir = 'x'\n", "datadir", "data_dir"),
        ("[pipeline]\nzzz = 1\n", "pipeline.zzz", None),
    ],
)
def test_unknown_file_keys_suggest_the_closest(
    tmp_path: Path, body: str, named: str, suggestion: str | None
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert f"'{named}'" in message and str(path) in message
    if suggestion is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean '{suggestion}'" in message


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("HEPATICA_LISTENER__PROT", "listener.port"),
        ("HEPATICA_PIPELINE__STABLE_SECOND", "pipeline.stable_seconds"),
        ("HEPATICA_LISTNER__PORT", "listener"),
    ],
)
def test_unknown_env_keys_are_errors_with_a_suggestion(name: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={name: "1"})
    assert name in str(caught.value)
    assert f"did you mean '{suggestion}'" in str(caught.value)


def test_missing_and_malformed_files_say_which(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_config(environ={"HEPATICA_CONFIG": str(missing)})
    broken = write(tmp_path, "[listener\nport = 1\n")
    with pytest.raises(ConfigError, match=re.escape(str(broken))):
        load_config(broken, environ={})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)
