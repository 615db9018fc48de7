"""MetaEmbedEmbedding: the LlamaIndex embedding contract, serialisation, inputs, vector cache."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import urllib.request
from pathlib import Path

import pytest
import torch
from llama_index.core.schema import ImageNode, QueryBundle, TextNode
from llama_index.embeddings.metaembed import MetaEmbedEmbedding
from llama_index.embeddings.metaembed.inputs import (
    aggregate_multi_vectors,
    image_input,
    node_input,
    query_items,
)

TEXTS = ["Paris is in France.", "Cats purr.", "The Moon orbits the Earth."]


def test_text_embeddings_are_the_first_vectors(model, embed) -> None:
    docs = embed.get_text_embedding_batch(TEXTS)
    ref = model.encode_documents(TEXTS)
    assert len(docs) == 3 and all(len(v) == embed.dim == 384 for v in docs)
    assert torch.allclose(torch.tensor(docs), ref[:, 0], atol=1e-5)
    q = embed.get_query_embedding("Where is Paris?")
    assert torch.allclose(
        torch.tensor(q), model.encode_queries(["Where is Paris?"])[0, 0], atol=1e-5
    )
    # the (1,1) MaxSim score is the dot product of the two single vectors
    assert embed.similarity(q, docs[0]) == pytest.approx(
        float(torch.tensor(q) @ torch.tensor(docs[0])), abs=1e-5
    )
    assert embed.get_query_multi_vectors(["Where is Paris?"]).shape == (1, 16, 384)
    assert embed.get_document_multi_vectors(TEXTS).shape == (3, 64, 384)


def test_async_embeddings_match_sync(embed) -> None:
    sync_docs = embed.get_text_embedding_batch(TEXTS)
    async_docs = asyncio.run(embed.aget_text_embedding_batch(TEXTS))
    assert torch.allclose(torch.tensor(async_docs), torch.tensor(sync_docs), atol=1e-5)
    q = asyncio.run(embed.aget_query_embedding("Cats"))
    assert torch.allclose(
        torch.tensor(q), torch.tensor(embed.get_query_embedding("Cats")), atol=1e-6
    )


def test_fields_are_documented(embed) -> None:
    fields = MetaEmbedEmbedding.model_fields
    for name in (
        "model_name",
        "model_fingerprint",
        "device",
        "max_length",
        "query_instruction",
        "vector_cache_mb",
        "query_cache_mb",
        "url_timeout",
    ):
        assert fields[name].description, name
    assert embed.class_name() == "MetaEmbedEmbedding"
    assert "_model" not in embed.to_dict()  # the model itself is never serialised
    with pytest.raises(TypeError, match="MetaEmbedModel"):
        MetaEmbedEmbedding(model="not a model")  # type: ignore[arg-type]


def test_to_dict_round_trip_reloads_the_same_model(model, embed) -> None:
    named = MetaEmbedEmbedding("metaembed-minilm-l6", model=model, max_length=128)
    data = named.to_dict()
    assert data["model_name"] == "metaembed-minilm-l6"
    assert data["model_fingerprint"] == model.fingerprint()
    again = MetaEmbedEmbedding.from_dict(data)  # loads the model by name
    assert again.model is not model and again.max_length == 128
    assert again.model.fingerprint() == model.fingerprint()
    assert again.get_query_embedding("moon") == pytest.approx(
        named.get_query_embedding("moon"), abs=1e-5
    )
    # an in-memory model has no reloadable name: from_dict says what to pass
    anonymous = embed.to_dict()
    assert anonymous["model_name"] is None
    with pytest.raises(ValueError, match="in-memory model"):
        MetaEmbedEmbedding.from_dict(anonymous)
    assert MetaEmbedEmbedding.from_dict(anonymous, model=model).model is model
    with pytest.raises(ValueError, match="fingerprint"):
        MetaEmbedEmbedding(model=model, model_fingerprint="0" * 16)


def test_device_must_match_a_given_model(model) -> None:
    assert MetaEmbedEmbedding(model=model, device="cpu").device == "cpu"
    with pytest.raises(ValueError, match=r"model\.to\('meta'\)"):
        MetaEmbedEmbedding(model=model, device="meta")
    assert model.device.type == "cpu"  # never moved


def test_image_embeddings_query_and_document_side(vlm, vlm_embed, flickr_images) -> None:
    paths = flickr_images[:2]
    single = vlm_embed.get_image_embedding(str(paths[0]))  # image query: query side
    assert torch.allclose(torch.tensor(single), vlm.encode_queries([paths[0]])[0, 0], atol=1e-4)
    batch = vlm_embed.get_image_embedding_batch([str(p) for p in paths])  # indexing: documents
    assert torch.allclose(torch.tensor(batch), vlm.encode_documents(list(paths))[:, 0], atol=1e-4)
    abatch = asyncio.run(vlm_embed.aget_image_embedding_batch([str(p) for p in paths]))
    assert torch.allclose(torch.tensor(abatch), torch.tensor(batch), atol=1e-5)
    stream = vlm_embed.get_image_embedding(io.BytesIO(paths[0].read_bytes()))
    assert stream == pytest.approx(single, abs=1e-4)


def test_image_inputs_fail_naming_the_url(tmp_path: Path, flickr_images) -> None:
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not an image")
    url = not_image.as_uri()
    with pytest.raises(ValueError, match=rf"image URL '{url}'.*cannot decode image bytes"):
        image_input(url, where="QueryBundle.image_path")
    decoded = image_input(flickr_images[0].as_uri())
    assert decoded.size[0] > 0  # a file:// URL to a real image decodes
    with pytest.raises(ValueError, match="not reachable"):
        image_input("http://127.0.0.1:9/nope.jpg", timeout=2)
    b64 = base64.b64encode(b"plain text").decode()
    with pytest.raises(ValueError, match=r"node 'n1': ImageNode.image: cannot decode"):
        node_input(ImageNode(image=b64, id_="n1"))


def test_protocol_errors_are_reported_with_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise http.client.RemoteDisconnected("Remote end closed connection")

    monkeypatch.setattr(urllib.request, "urlopen", broken)
    with pytest.raises(ValueError, match=r"'http://example\.invalid/a\.jpg' is not reachable"):
        image_input("http://example.invalid/a.jpg")


def test_query_items_follow_llamaindex_conventions(flickr_images) -> None:
    assert query_items("q") == ["q"]
    hyde = QueryBundle(query_str="q", custom_embedding_strs=["hypothetical answer", "q"])
    assert query_items(hyde) == ["hypothetical answer", "q"]
    path = str(flickr_images[0])
    assert query_items(QueryBundle(query_str="", image_path=path)) == [Path(path)]
    assert query_items(QueryBundle(query_str="a dog", image_path=path)) == [("a dog", Path(path))]
    image_only = QueryBundle(query_str="What is shown?", image_path=path, custom_embedding_strs=[])
    assert query_items(image_only) == [Path(path)]
    with pytest.raises(ValueError, match="nothing to search for"):
        query_items(QueryBundle(query_str="  "))
    assert node_input(TextNode(text="hello")) == "hello"


def test_aggregate_of_several_queries_is_kept_for_the_store(model) -> None:
    embed = MetaEmbedEmbedding(model=model)
    embed.attach_vector_cache()  # what MetaEmbedVectorStore does
    strs = ["What causes diabetes?", "Insulin resistance causes type 2 diabetes."]
    agg = embed.get_agg_embedding_from_queries(strs)
    parts = model.encode_queries(strs)
    assert torch.allclose(torch.tensor(agg, dtype=torch.float32), parts[:, 0].mean(0), atol=1e-5)
    kept = embed.lookup_multi_vector("query", agg)
    assert kept is not None and kept.shape == (16, 384)
    assert torch.allclose(kept, parts.mean(0), atol=1e-5)
    aagg = asyncio.run(embed.aget_agg_embedding_from_queries(strs))
    assert embed.lookup_multi_vector("query", aagg) is not None
    bundle = embed.get_query_bundle_multi_vector(
        QueryBundle(query_str="x", custom_embedding_strs=strs)
    )
    assert torch.allclose(bundle, aggregate_multi_vectors(parts), atol=1e-5)


def test_vector_cache_is_bounded_in_bytes(model) -> None:
    one_doc = 64 * 384 * 4
    embed = MetaEmbedEmbedding(model=model, vector_cache_mb=2.5 * one_doc / 2**20)
    embed.get_text_embedding_batch(TEXTS)
    assert embed.cache_stats()["document_entries"] == 0  # no store attached: nothing kept
    embed.attach_vector_cache()
    vecs = embed.get_text_embedding_batch(TEXTS)
    stats = embed.cache_stats()
    assert stats["document_entries"] == 2 and stats["document_bytes"] == 2 * one_doc
    assert stats["document_evicted"] == 1
    assert embed.lookup_multi_vector("document", vecs[0]) is None  # the oldest went first
    kept = embed.lookup_multi_vector("document", vecs[2], pop=True)
    assert kept is not None and kept.untyped_storage().nbytes() == one_doc  # own storage
    assert embed.cache_stats()["document_entries"] == 1
