"""Shared set-up of lopt's Python tests (run by ctest -L python, which sets PYTHONPATH to
build/python and LOPT_BUILD_DIR / LOPT_SOURCE_DIR)."""
import os
import pathlib

import pytest
import torch

SOURCE_DIR = pathlib.Path(os.environ.get("LOPT_SOURCE_DIR",
                                         pathlib.Path(__file__).resolve().parents[2]))
BUILD_DIR = pathlib.Path(os.environ.get("LOPT_BUILD_DIR", SOURCE_DIR / "build"))
SHIPPED = SOURCE_DIR / "models" / "fmnist8_elo.lopt"

torch.set_num_threads(1)


@pytest.fixture
def shipped_lopt():
    assert SHIPPED.exists(), SHIPPED
    return SHIPPED


def binary(*parts):
    path = BUILD_DIR.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"{path} is not built (cmake --build build --target {parts[-1]})")
    return str(path)
