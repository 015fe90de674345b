"""The Serve config and the KubeRay RayService manifest in deploy/: valid for Ray Serve's own schema,
every variable a flashvl setting, and ``flashvl.deploy.ray:app`` builds from them (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("ray.serve")

from ray.serve.schema import ServeDeploySchema

from flashvl.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _configs() -> dict[str, dict[str, Any]]:
    serve_config = yaml.safe_load((ROOT / "deploy/ray/serve-config.yaml").read_text())
    service = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    assert service["kind"] == "RayService" and service["spec"]["rayClusterConfig"]["rayVersion"] == "2.60.0"
    return {"serve-config": serve_config, "rayservice": yaml.safe_load(service["spec"]["serveConfigV2"])}


@pytest.mark.parametrize("name", ["serve-config", "rayservice"])
def test_config_is_valid_and_builds_the_app(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _configs()[name]
    schema = ServeDeploySchema.model_validate(config)
    (app,) = schema.applications
    assert app.import_path == "flashvl.deploy.ray:app"
    env: dict[str, str] = app.runtime_env["env_vars"]
    fields = {f"FLASHVL_{field.upper()}" for field in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    keys = tmp_path / "keys.txt"
    keys.write_text("")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FLASHVL_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("FLASHVL_REVIEW_SQLITE_PATH", str(tmp_path / "reviews.sqlite3"))
    import flashvl.deploy.ray as deploy_ray

    application = deploy_ray.app  # what `serve run` / KubeRay import
    assert type(application).__name__ == "Application"


def test_replica_specs_and_builder_arguments() -> None:
    from flashvl.deploy.ray import build, replicas

    settings = Settings(autoscale_upscale_delay_s=5, autoscale_downscale_delay_s=60)
    assert replicas("3", settings) == {"num_replicas": 3}
    scaling = replicas("1-4", settings)["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["upscale_delay_s"]) == (1, 4, 5)
    with pytest.raises(ValueError, match="MIN-MAX"):
        replicas("3-1", settings)
    assert type(build({"vision_replicas": "1-2", "language": "none"})).__name__ == "Application"
    with pytest.raises(ValueError, match="--vision-cache redis"):
        build({"ingress_replicas": "2", "language": "none"})


def test_cli_refuses_multi_replica_ingress_on_process_local_state() -> None:
    import subprocess
    import sys

    args = ["serve", "--engine", "ray", "--ingress-replicas", "2", "--language", "none", "--review-store", "memory"]
    done = subprocess.run([sys.executable, "-m", "flashvl", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    err = done.stderr
    assert "--vision-cache redis" in err and "--rate-limit-storage redis://" in err and "--review-store" in err
    assert "--model-queue-redis-url" in err
