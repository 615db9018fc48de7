"""MetaEmbedEmbeddings: exact consistency with the core encoder and scoring."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from metaembed_rag import MetaEmbedModel, maxsim

from langchain_metaembed import MetaEmbedEmbeddings

TEXTS = ["Insulin resistance causes type 2 diabetes.", "The Moon orbits the Earth."]
QUERY = "What causes diabetes?"


def test_single_vectors_are_the_first_meta_vectors(default_embeddings: MetaEmbedEmbeddings) -> None:
    model = default_embeddings.client
    docs = default_embeddings.embed_documents(TEXTS)
    query = default_embeddings.embed_query(QUERY)
    D = model.encode_documents(TEXTS, max_length=128)
    Q = model.encode_queries([QUERY], max_length=128)
    assert len(docs) == 2 and len(docs[0]) == model.dim == default_embeddings.dim
    assert torch.allclose(torch.tensor(docs), D[:, 0], atol=1e-6)
    assert torch.allclose(torch.tensor(query), Q[0, 0], atol=1e-6)
    # The dot product of the single vectors is the MetaEmbed score at budget (1,1).
    dots = torch.tensor(docs) @ torch.tensor(query)
    assert torch.allclose(dots, maxsim(Q, D, (1, 1))[0], atol=1e-5)
    assert default_embeddings.embed_documents([]) == []


def test_multivectors_and_budget_prefixes(default_embeddings: MetaEmbedEmbeddings) -> None:
    Q = default_embeddings.encode_queries([QUERY])
    D = default_embeddings.encode_documents(TEXTS)
    assert Q.shape == (1, 16, 384) and D.shape == (2, 64, 384)
    assert torch.allclose(Q.norm(dim=-1), torch.ones(1, 16), atol=1e-5)
    q84 = default_embeddings.embed_query_multivector(QUERY, budget=(8, 16))
    d84 = default_embeddings.embed_documents_multivector(TEXTS, budget="8,16")
    assert torch.allclose(torch.tensor(q84), Q[0, :8], atol=1e-6)
    assert torch.allclose(torch.tensor(d84), D[:, :16], atol=1e-6)
    assert len(default_embeddings.embed_query_multivector(QUERY)) == 16
    with pytest.raises(ValueError, match="Valid budgets"):
        default_embeddings.embed_query_multivector(QUERY, budget=(3, 5))
    with pytest.raises(ValueError, match="is not a budget"):
        default_embeddings.embed_query_multivector(QUERY, budget="many")


@pytest.mark.asyncio
async def test_async_equals_sync(default_embeddings: MetaEmbedEmbeddings) -> None:
    assert await default_embeddings.aembed_query(QUERY) == default_embeddings.embed_query(QUERY)
    assert await default_embeddings.aembed_documents(TEXTS) == default_embeddings.embed_documents(
        TEXTS
    )


def test_model_is_loaded_once_and_client_can_be_passed(
    default_embeddings: MetaEmbedEmbeddings,
) -> None:
    a = MetaEmbedEmbeddings()
    b = MetaEmbedEmbeddings(model="metaembed-minilm-l6")
    assert a.client is b.client  # the process-wide cache
    adopted = MetaEmbedEmbeddings(client=default_embeddings.client, batch_size=4)
    assert adopted.client is default_embeddings.client
    assert adopted.model_name == f"in-memory:{default_embeddings.fingerprint()}"
    with pytest.raises(TypeError, match="MetaEmbedModel"):
        MetaEmbedEmbeddings(client="not a model")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MetaEmbedEmbeddings(batch_size=0)
    with pytest.raises(ValueError):
        MetaEmbedEmbeddings(unknown_field=1)  # extra="forbid"


def test_images_need_a_vision_language_model(default_embeddings: MetaEmbedEmbeddings) -> None:
    from PIL import Image

    with pytest.raises(ValueError, match="reads text only"):
        default_embeddings.embed_image(Image.new("RGB", (32, 32), "red"))


def _tiny_models():
    path = Path(__file__).resolve().parents[4] / "tests" / "tiny_models.py"
    spec = importlib.util.spec_from_file_location("_lc_tiny_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_embeddings_with_a_tiny_vlm(tmp_path: Path) -> None:
    from PIL import Image

    folder = _tiny_models().build_tiny_qwen2vl(tmp_path / "qwen2vl")
    model = MetaEmbedModel.from_backbone(
        str(folder), num_query_tokens=4, num_candidate_tokens=8, budgets=[(1, 1), (4, 8)]
    )
    emb = MetaEmbedEmbeddings(client=model)
    images = [Image.new("RGB", (56, 56), c) for c in ("red", "blue")]
    vectors = emb.embed_images(images)
    full = model.encode_documents(images)
    assert torch.allclose(torch.tensor(vectors), full[:, 0], atol=1e-6)
    single = torch.tensor(emb.embed_image(images[1]))  # batch of one: float noise only
    assert torch.allclose(single, full[1, 0], atol=1e-5)
