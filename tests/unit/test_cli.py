"""The command line without models: per-command flags, short usage, described positionals, clean
errors and exit codes for user mistakes (a missing or empty folder, a folder given as an image, a bad
manifest line), and progress reported per evaluation item."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from flashvl.cli import _parser, main
from flashvl.config import Settings

EXIT_USAGE = 2  # a usage mistake: unknown flag, bad setting, missing or unusable input


def help_of(command: str) -> str:
    parser = _parser()
    sub: argparse.ArgumentParser = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    return sub.format_help()


def run(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own exits
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


def test_in_process_commands_take_no_server_flags() -> None:
    server_only = ["--host", "--port", "--api-keys", "--jwt-secret-file", "--rate-limit-per-key"]
    for command in ("ask", "caption", "eval", "batch"):
        text = help_of(command)
        for flag in server_only:
            assert flag + " " not in text, (command, flag)
    serve = help_of("serve")
    for flag in server_only:
        assert flag + " " in serve
    # each option that not every command takes says which ones do
    assert "serve only" in serve.split("--host", 1)[1].split("--", 1)[0]
    assert "--router " in help_of("ask") and "--router " not in help_of("caption")
    assert "--jobs-batch-size" in help_of("batch") and "--jobs-batch-size" not in help_of("ask")
    from flashvl.config import commands_of

    assert commands_of("host") == ("serve",) and "batch" in commands_of("max_image_bytes")


def test_usage_is_one_line_and_positionals_are_described() -> None:
    for command in ("serve", "ask", "caption", "eval", "batch"):
        usage = help_of(command).split("\n\n", 1)[0]
        assert usage.count("\n") == 0 and len(usage) < 100, usage
    ask = help_of("ask")
    assert "Image file: JPEG, PNG" in ask and "The question, in quotes" in ask
    batch = help_of("batch")
    assert '{"image": PATH_OR_URL, "key": ID}' in " ".join(batch.split())  # the manifest format


def test_a_missing_argument_prints_the_short_usage(capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["ask", "photo.jpg"], capfd)
    assert code == EXIT_USAGE
    assert err.splitlines()[0] == "usage: flashvl ask [options] IMAGE QUESTION"
    assert len(err.splitlines()) == 2 and "QUESTION" in err


def test_a_flag_of_another_command_says_which_command_takes_it(capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["caption", "--port", "9000", "photo.jpg"], capfd)
    assert code == EXIT_USAGE
    assert "--port is an option of serve, not of caption" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["empty", "text-only", "missing"])
def test_batch_ends_at_once_on_empty_non_image_or_missing_input(
    kind: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in"
    if kind != "missing":
        source.mkdir()
    if kind == "text-only":
        (source / "notes.txt").write_text("not an image")
    out = tmp_path / "out.jsonl"
    code, stdout, err = run(
        ["batch", "safety", str(source), "--out", str(out), "--jobs-sqlite-path", str(tmp_path / "j.db")], capfd
    )
    assert code == EXIT_USAGE and stdout == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    expected = {"empty": "the folder is empty", "text-only": "notes.txt", "missing": "no such folder"}[kind]
    assert expected in err and str(source) in err


def test_batch_manifest_mistakes_name_the_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"image": "a.jpg"}) + "\n" + json.dumps({"key": "b"}) + "\n")
    code, _, err = run(["batch", "ocr", str(manifest), "--out", str(tmp_path / "o.jsonl")], capfd)
    assert code == EXIT_USAGE and "Traceback" not in err
    assert f"{manifest}:2:" in err and '"image"' in err
    manifest.write_text('{"image": "a.jpg"\n')
    code, _, err = run(["batch", "ocr", str(manifest), "--out", str(tmp_path / "o.jsonl")], capfd)
    assert code == EXIT_USAGE and f"{manifest}:1: not valid JSON" in err


def test_caption_of_a_folder_or_a_missing_file_is_a_clean_usage_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["caption", str(tmp_path)], capfd)
    assert code == EXIT_USAGE and "is a folder" in err and "flashvl batch" in err
    code, _, err = run(["ask", str(tmp_path / "nope.jpg"), "what is this?"], capfd)
    assert code == EXIT_USAGE and "no such image file" in err and "Traceback" not in err


def test_invalid_settings_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLASHVL_PORT", "abc")
    code, _, err = run(["serve"], capfd)
    assert code == EXIT_USAGE and "FLASHVL_PORT" in err and "Traceback" not in err


def test_eval_reports_progress_after_each_item() -> None:
    from flashvl.errors import FlashvlError
    from flashvl.eval.runner import evaluate, load_items

    class Refusing:  # no models: every item is refused, which is enough to see the progress
        async def answer(self, query: object) -> None:
            raise FlashvlError("stage_unavailable", "no model in this test", 503)

    items = [item for item in load_items() if item.image.startswith("skimage:")][:3]
    seen: list[tuple[int, int, str]] = []
    asyncio.run(evaluate(Refusing(), items, Settings(), lambda *progress: seen.append(progress)))
    assert seen == [(0, 3, items[0].id)] + [(n, 3, item.id) for n, item in enumerate(items, 1)]
