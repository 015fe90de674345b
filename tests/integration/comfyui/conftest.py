"""One stack (``comfyui_stack.py``) for every ComfyUI test module here: it takes a minute to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from comfyui_stack import Stack, running_stack


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("comfyui")) as running:
        yield running
