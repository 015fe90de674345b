"""Stage fingerprints and cache keys: equal for the same model served the same way in another process,
different for another model file, setting, image or question; never a secret or a per-process value."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flashvl.config import Settings
from flashvl.media import decode_image
from flashvl.media.types import LoadedImage
from flashvl.pipeline.cache.base import observation_cache_key, stage_fingerprint, vision_cache_key
from flashvl.stages.base import LanguageStage, StreamingVisionStage, VisionRequest, VisionStage
from flashvl.stages.fingerprint import file_sha256, folder_sha256, hub_snapshot
from flashvl.stages.glm4v.stage import Glm4vStage
from flashvl.stages.llamacpp import LlamaCppLanguageStage
from flashvl.stages.offline import stage as offline
from flashvl.stages.offline.safety import SafetyOnlyStage
from flashvl.stages.offline.stage import OfflineVisionStage
from flashvl.stages.openai_compat import OpenAICompatStage

SECRET = "sk-do-not-cache-me-7f3a"


def _image(value: int) -> LoadedImage:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buffer, "PNG")
    return decode_image(buffer.getvalue(), Settings(), "path")


def _request(value: int = 10, question: str = "What is it?", **kwargs: object) -> VisionRequest:
    return VisionRequest([_image(value)], question, **kwargs)  # type: ignore[arg-type]


def _material(stage: object) -> str:
    return json.dumps(stage_fingerprint(stage), sort_keys=True)


def _model_folder(root: Path, weights: bytes = b"\x00" * 64) -> Path:
    """A GLM-style folder (config, weight index, weights); nothing here needs it to load."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "glm4v", "hidden_size": 64}))
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model.safetensors"}}))
    (root / "model.safetensors").write_bytes(weights)
    return root


# ------------------------------------------------------------------ protocol


def test_every_stage_implements_the_protocol_with_json_values(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\x01" * 100)
    stages = [
        OfflineVisionStage(),
        Glm4vStage(str(_model_folder(tmp_path / "glm"))),
        OpenAICompatStage("http://127.0.0.1:9/v1", "glm", role="vision"),
        SafetyOnlyStage(threads=2),
    ]
    for stage in stages:
        assert isinstance(stage, VisionStage), stage
        json.dumps(stage.fingerprint())  # plain JSON values, no default=str needed
    assert isinstance(stages[1], StreamingVisionStage)
    assert stages[3].fingerprint() == SafetyOnlyStage(threads=1).fingerprint()
    for stage in (LlamaCppLanguageStage(gguf), stages[1], stages[2]):
        assert isinstance(stage, LanguageStage), stage
        json.dumps(stage.fingerprint())


def test_a_stage_without_a_fingerprint_is_not_cached_by_reflection() -> None:
    class Bare:
        name = "bare"
        model_id = "m"

    with pytest.raises(TypeError, match="fingerprint"):
        vision_cache_key(Bare(), _request())


# ------------------------------------------------------------------ offline


def test_offline_key_ignores_threads_and_concurrency_but_not_output_settings() -> None:
    key = vision_cache_key(OfflineVisionStage(), _request())
    assert key == vision_cache_key(OfflineVisionStage(threads=3, concurrency=4), _request())
    variants = {
        "ocr_min_score": OfflineVisionStage(ocr_min_score=0.6),
        "safe": OfflineVisionStage(safe_threshold=0.3),
        "unsafe": OfflineVisionStage(unsafe_threshold=0.7),
        "max_pixels": OfflineVisionStage(max_pixels=1_000_000),
    }
    keys = {name: vision_cache_key(stage, _request()) for name, stage in variants.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys)


def test_offline_fingerprint_hashes_the_model_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = offline._model_files()
    assert all(path.is_file() for path in files.values()), files
    fingerprint = OfflineVisionStage().fingerprint()
    assert fingerprint["files"]["detector"] == file_sha256(files["detector"])
    before = vision_cache_key(OfflineVisionStage(), _request())
    other = tmp_path / "nanodet.onnx"
    other.write_bytes(files["detector"].read_bytes()[:-1] + b"\x00")  # another detector file
    monkeypatch.setattr(offline, "_model_files", lambda: {**files, "detector": other})
    assert vision_cache_key(OfflineVisionStage(), _request()) != before


def test_two_loaded_offline_stages_give_the_same_keys() -> None:
    async def loaded(threads: int) -> OfflineVisionStage:
        stage = OfflineVisionStage(threads=threads)
        await stage.load()
        return stage

    one, two = asyncio.run(loaded(1)), asyncio.run(loaded(2))
    request = _request()
    assert vision_cache_key(one, request) == vision_cache_key(two, request)
    params = one.observation_params(request)
    assert observation_cache_key(one, request.images, params) == observation_cache_key(two, request.images, params)


# ------------------------------------------------------------------ keys: image, question, parameters


def test_vision_keys_separate_image_question_and_parameters() -> None:
    stage = OfflineVisionStage()
    key = vision_cache_key(stage, _request())
    variants = [
        vision_cache_key(stage, _request(11)),
        vision_cache_key(stage, _request(question="Why is it?")),
        vision_cache_key(stage, _request(task="ocr")),
        vision_cache_key(stage, _request(max_pixels=70_000)),
        vision_cache_key(stage, _request(max_tokens=5)),
        vision_cache_key(stage, _request(enable_thinking=True)),
    ]
    assert key not in variants and len(set(variants)) == len(variants)


def test_observation_keys_are_shared_by_questions_but_not_by_images_params_or_stages() -> None:
    stage = OfflineVisionStage()
    first, second = _request(question="What is it?"), _request(question="图里有什么?")
    key = observation_cache_key(stage, first.images, stage.observation_params(first))
    assert key == observation_cache_key(stage, second.images, stage.observation_params(second))
    ocr = _request(task="ocr")
    variants = [
        observation_cache_key(stage, _request(11).images, stage.observation_params(first)),
        observation_cache_key(stage, ocr.images, stage.observation_params(ocr)),
        observation_cache_key(stage, first.images, stage.observation_params(_request(max_pixels=70_000))),
        observation_cache_key(OfflineVisionStage(ocr_min_score=0.7), first.images, stage.observation_params(first)),
    ]
    assert key not in variants and len(set(variants)) == len(variants)
    assert key != vision_cache_key(stage, first)


# ------------------------------------------------------------------ GLM


def test_glm_key_depends_on_the_weights_and_output_settings_not_on_threads_or_batching(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "a" / "tiny")
    stage = Glm4vStage(str(folder), threads=1, max_batch=8, batch_wait_ms=10, device="cpu")
    same = Glm4vStage(str(folder), threads=7, max_batch=2, batch_wait_ms=300, device="cuda", prepare_threads=3)
    same.load_seconds = 12.5  # per process
    request = _request()
    key = vision_cache_key(stage, request)
    assert key == vision_cache_key(same, request)
    # The same files in another place (another machine's copy) are the same model.
    copy = tmp_path / "b" / "tiny"
    shutil.copytree(folder, copy)
    assert vision_cache_key(Glm4vStage(str(copy)), request) == key
    retrained = _model_folder(tmp_path / "c" / "tiny", weights=b"\x01" * 64)
    variants = [
        vision_cache_key(Glm4vStage(str(retrained)), request),
        vision_cache_key(Glm4vStage(str(folder), top_p=0.9), request),
        vision_cache_key(Glm4vStage(str(folder), max_pixels=200_000), request),
        vision_cache_key(Glm4vStage(str(folder), dtype="bfloat16"), request),
        vision_cache_key(Glm4vStage(str(folder), default_max_tokens=16), request),
    ]
    assert key not in variants and len(set(variants)) == len(variants)


def test_glm_from_a_hub_snapshot_uses_the_revision_without_reading_the_weights(tmp_path: Path) -> None:
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = _model_folder(tmp_path / "hub" / "models--zai-org--GLM-4.6V-Flash" / "snapshots" / revision)
    assert hub_snapshot(snapshot) == ("zai-org/GLM-4.6V-Flash", revision)
    weights = Glm4vStage(str(snapshot)).fingerprint()["weights"]
    assert weights == {"repo": "zai-org/GLM-4.6V-Flash", "revision": revision}
    assert hub_snapshot(tmp_path) is None
    assert folder_sha256(snapshot) == folder_sha256(snapshot)


# ------------------------------------------------------------------ llama.cpp


def test_llamacpp_fingerprint_is_the_gguf_hash_not_slots_threads_ports_or_keys(tmp_path: Path) -> None:
    gguf = tmp_path / "user.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    one = LlamaCppLanguageStage(gguf, slots=1, ctx=2048, threads=1, http_port=0)
    two = LlamaCppLanguageStage(gguf, slots=4, ctx=8192, threads=8, http_port=8081, http_api_key=SECRET)
    assert one.fingerprint() == two.fingerprint()
    assert one.fingerprint()["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert SECRET not in json.dumps(two.fingerprint()) and one.http_api_key not in json.dumps(one.fingerprint())
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 4)
    assert LlamaCppLanguageStage(other, model_id="user").fingerprint()["sha256"] != one.fingerprint()["sha256"]


def test_llamacpp_trusts_the_bundled_models_verification_marker(tmp_path: Path) -> None:
    from flashvl.stages.brain_model import BRAIN_MODEL_SHA256, _write_marker, verified_sha256

    gguf = tmp_path / "bundled.gguf"
    gguf.write_bytes(b"not really the brain")
    _write_marker(gguf, BRAIN_MODEL_SHA256)  # what ensure_brain_model leaves after verifying
    assert verified_sha256(gguf) == BRAIN_MODEL_SHA256
    assert LlamaCppLanguageStage(gguf).fingerprint()["sha256"] == BRAIN_MODEL_SHA256  # the file is not re-read
    gguf.write_bytes(b"changed after verification")  # size and mtime no longer match the marker
    assert verified_sha256(gguf) is None
    assert LlamaCppLanguageStage(gguf).fingerprint()["sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    # The bundled model before it is assembled (at load): the pinned hash it is verified against.
    assert LlamaCppLanguageStage(None).fingerprint()["sha256"] == BRAIN_MODEL_SHA256


# ------------------------------------------------------------------ OpenAI-compatible upstream


def test_openai_key_never_holds_the_api_key_and_ignores_timeouts() -> None:
    def stage(**kwargs: object) -> OpenAICompatStage:
        options: dict[str, object] = {"role": "vision", "api_key": SECRET} | kwargs
        return OpenAICompatStage("http://127.0.0.1:8000/v1", "glm-4.6v", **options)  # type: ignore[arg-type]

    with_key = stage()
    assert SECRET not in _material(with_key)
    request = _request()
    key = vision_cache_key(with_key, request)
    assert key == vision_cache_key(stage(api_key="another-key", timeout_s=5, retries=0), request)
    assert key == vision_cache_key(stage(api_key=None, role="language"), request)
    variants = [
        vision_cache_key(OpenAICompatStage("http://127.0.0.1:8001/v1", "glm-4.6v", role="vision"), request),
        vision_cache_key(OpenAICompatStage("http://127.0.0.1:8000/v1", "other", role="vision"), request),
        vision_cache_key(stage(image_mode="url"), request),
        vision_cache_key(stage(enable_thinking_kwarg=False), request),
    ]
    assert key not in variants and len(set(variants)) == len(variants)


def test_openai_credentials_in_the_base_url_stay_out_of_the_key() -> None:
    stage = OpenAICompatStage(f"https://user:{SECRET}@llm.example:8443/v1?api-key={SECRET}", "m", role="vision")
    material = _material(stage)
    assert SECRET not in material and "user" not in material
    assert stage.fingerprint()["base_url"] == "https://llm.example:8443/v1"


def test_big_file_hashes_are_remembered_on_disk_and_any_change_misses(tmp_path, monkeypatch) -> None:
    """A restart must not re-read a 20 GB model folder: big files' hashes are kept on disk, keyed by
    path, inode, size and mtime; a changed file misses and is read again."""
    import hashlib
    import os

    from flashvl.stages import fingerprint

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprint, "_DISK_MEMO_MIN_BYTES", 1024)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(4096))
    real = fingerprint.file_sha256(weights)
    assert real == hashlib.sha256(weights.read_bytes()).hexdigest()
    [memo] = (tmp_path / "cache" / "flashvl" / "file-hashes").iterdir()
    memo.write_text("f" * 64)  # what a later process finds on disk, instead of reading the file
    fingerprint._hashes.clear()  # a new process
    assert fingerprint.file_sha256(weights) == "f" * 64
    weights.write_bytes(os.urandom(4096))
    os.utime(weights, ns=(1, 1))
    fingerprint._hashes.clear()
    assert fingerprint.file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()
