"""Shared fixtures: tiny random backbones saved once per test session (no download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import (  # noqa: E402
    build_tiny_bert,
    build_tiny_idefics3,
    build_tiny_qwen2vl,
    build_tiny_qwen25vl,
)


def _cached(factory, name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return factory(tmp_path_factory.mktemp("tiny_models") / name)


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a 2-layer, 32-d random BERT with a WordPiece tokenizer."""
    return _cached(build_tiny_bert, "bert", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_qwen2vl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random Qwen2-VL checkpoint (ForConditionalGeneration layout)."""
    return _cached(build_tiny_qwen2vl, "qwen2vl", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_qwen25vl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random Qwen2.5-VL checkpoint."""
    return _cached(build_tiny_qwen25vl, "qwen25vl", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_idefics3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random Idefics3 checkpoint with image splitting."""
    return _cached(build_tiny_idefics3, "idefics3", tmp_path_factory)
