"""ONNX Runtime sessions for the offline vision parts, built the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def make_session(path: Path | str, threads: int = 0) -> ort.InferenceSession:
    """A CPU session; ``threads`` 0 lets ONNX Runtime use every core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
