"""Settings: defaults, env vars, config file, CLI flags and their precedence."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import get_args

import pytest

from flashvl.cli import _parser
from flashvl.config import Settings, load_settings, settings_from_args


def test_defaults_bind_loopback_8080() -> None:
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.fetch_allow_cidrs == [] and settings.file_root is None


def test_every_field_is_a_flag_with_its_env_var_in_help() -> None:
    help_text = _parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
        assert f"FLASHVL_{name.upper()}" in help_text.replace("\n", "").replace(" ", "")


def test_precedence_cli_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "flashvl.toml"
    config.write_text('port = 9000\nmax_tokens = 100\nfetch_allow_cidrs = ["10.0.0.0/8"]\n')
    monkeypatch.setenv("FLASHVL_MAX_TOKENS", "200")
    monkeypatch.setenv("FLASHVL_ALLOWED_FORMATS", "png,jpeg")
    args = _parser().parse_args(["serve", "--config", str(config), "--port", "9100"])
    settings = settings_from_args(args)
    assert settings.port == 9100  # CLI beats file
    assert settings.max_tokens == 200  # env beats file
    assert settings.fetch_allow_cidrs == ["10.0.0.0/8"]  # file beats default
    assert settings.allowed_formats == ["PNG", "JPEG"]  # comma lists from env


def test_unknown_config_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="unknown settings"):
        load_settings(config_file=config)


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError):
        load_settings({"port": 70000})
    ns = argparse.Namespace(config=None, **dict.fromkeys(Settings.model_fields))
    ns.max_tokens = 0
    with pytest.raises(ValueError):
        settings_from_args(ns)


# ------------------------------------------------------------------ mistakes are named (issue 20)


def test_unknown_flashvl_variables_are_warned_about_with_the_closest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHVL_TEMPRATURE", "0.9")
    monkeypatch.setenv("FLASHVL_CONFIG_UNRELATED_THING", "x")
    warnings: list[str] = []
    settings = load_settings(warn=warnings.append)
    assert settings.temperature == 0.2  # the typo changed nothing ...
    assert any("FLASHVL_TEMPRATURE" in w and "did you mean FLASHVL_TEMPERATURE?" in w for w in warnings)  # ... loudly
    assert any("FLASHVL_CONFIG_UNRELATED_THING" in w for w in warnings)
    monkeypatch.delenv("FLASHVL_TEMPRATURE")
    monkeypatch.delenv("FLASHVL_CONFIG_UNRELATED_THING")
    monkeypatch.setenv("FLASHVL_MAX_TOKENS", "7")
    warnings.clear()
    assert load_settings(warn=warnings.append).max_tokens == 7 and warnings == []


def test_unknown_config_keys_name_the_line_and_the_closest_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("port = 9000\n\ntemprature = 0.5\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(config))}:3: .*'temprature' \(did you mean temperature\?\)"):
        load_settings(config_file=config)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("log_level", "loud"),
        ("route_default", "fast"),
        ("router", "magic"),
        ("vision_cache", "disk"),
        ("moderation_language", "sometimes"),
        ("jobs_store", "postgres"),
        ("review_store", "files"),
        ("upstream_image_mode", "link"),
        ("glm_dtype", "int4"),
    ],
)
def test_enumerations_are_typed_and_refuse_other_values(
    field: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    choices = get_args(Settings.model_fields[field].annotation)
    assert choices and value not in choices  # a Literal, so the type lists the choices
    monkeypatch.setenv(f"FLASHVL_{field.upper()}", value)
    with pytest.raises(ValueError, match=f"FLASHVL_{field.upper()}"):
        load_settings()
    monkeypatch.delenv(f"FLASHVL_{field.upper()}")
    with pytest.raises(SystemExit):  # the flag offers the choices and refuses the rest
        _parser().parse_args(["serve", "--" + field.replace("_", "-"), value])


def test_every_error_names_its_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHVL_PORT", "abc")
    with pytest.raises(ValueError, match=r"^FLASHVL_PORT: .*integer.*'abc'"):
        load_settings()
    monkeypatch.delenv("FLASHVL_PORT")
    with pytest.raises(ValueError, match=r"^--max-tokens: .*greater than or equal to 1"):
        load_settings({"max_tokens": 0})
    config = tmp_path / "flashvl.toml"
    config.write_text('host = "0.0.0.0"\nmax_tokens = -5\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(config))}:2: "):
        load_settings(config_file=config)
    config.write_text("max_tokens = = 5\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(config))}: not valid TOML: .*line 1"):
        load_settings(config_file=config)
    as_json = tmp_path / "flashvl.json"
    as_json.write_text('{\n  "port": 1,\n  "max_tokens": \n}\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(as_json))}:4: not valid JSON"):
        load_settings(config_file=as_json)
    with pytest.raises(ValueError, match="no such config file"):
        load_settings(config_file=tmp_path / "missing.toml")
