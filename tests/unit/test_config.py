"""Settings: defaults, env vars, config file, CLI flags and their precedence."""

from __future__ import annotations

import argparse
from pathlib import Path

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
