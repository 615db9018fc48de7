"""Images through llama-index-core's MultiModalVectorStoreIndex with a tiny random VLM.

The tiny Qwen2-VL has random weights: the tests check that every path computes exactly the
MaxSim the core API computes on the same inputs, not retrieval quality.
"""

from __future__ import annotations

import asyncio
import csv
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from llama_index.core import StorageContext
from llama_index.core.bridge.pydantic import Field
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.llms import ChatMessage, ChatResponse, ImageBlock, MockLLM, TextBlock
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, QueryBundle
from llama_index.postprocessor.metaembed_rerank import MetaEmbedRerank
from llama_index.retrievers.metaembed import MetaEmbedRetriever
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore

from metaembed_rag import TwoStageRetriever, maxsim


def _captions(images: list[Path]) -> dict[str, str]:
    wanted = {p.name for p in images}
    out: dict[str, str] = {}
    with (images[0].parent.parent / "captions.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["image"] in wanted and row["image"] not in out:
                out[row["image"]] = row["caption"]
    return out


@pytest.fixture(scope="module")
def mm_index(vlm_embed, flickr_images):
    captions = _captions(flickr_images)
    nodes = [
        ImageNode(image_path=str(p), text=captions.get(p.name, ""), id_=p.stem)
        for p in flickr_images
    ]
    text_store = MetaEmbedVectorStore(vlm_embed, dtype="float32")
    image_store = MetaEmbedVectorStore(vlm_embed, dtype="float32")
    ctx = StorageContext.from_defaults(vector_store=text_store, image_store=image_store)
    index = MultiModalVectorStoreIndex(
        nodes=nodes, storage_context=ctx, embed_model=vlm_embed, image_embed_model=vlm_embed
    )
    return index, text_store, image_store


def _ranking(query_vectors: torch.Tensor, docs: torch.Tensor, ids: list[str], k: int):
    scores = maxsim(query_vectors, docs, None)[0]
    order = sorted(range(len(ids)), key=lambda i: -float(scores[i]))[:k]
    return [ids[i] for i in order], [float(scores[i]) for i in order]


def test_image_query_through_multimodal_index(vlm, mm_index, flickr_images) -> None:
    index, text_store, image_store = mm_index
    assert image_store.num_nodes == len(flickr_images) and text_store.num_nodes == len(
        flickr_images
    )
    retriever = index.as_retriever(similarity_top_k=3, image_similarity_top_k=3)
    query = flickr_images[2]
    got = retriever.image_to_image_retrieve(str(query))
    assert all(isinstance(n.node, ImageNode) for n in got)
    docs = vlm.encode_documents(list(flickr_images))
    want_ids, want_scores = _ranking(
        vlm.encode_queries([query]), docs, [p.stem for p in flickr_images], 3
    )
    assert [n.node.node_id for n in got] == want_ids
    assert [n.score for n in got] == pytest.approx(want_scores, abs=1e-3)
    agot = asyncio.run(retriever.aimage_to_image_retrieve(str(query)))
    assert [(n.node.node_id, n.score) for n in agot] == [(n.node.node_id, n.score) for n in got]


def test_text_query_over_images_and_captions(vlm, mm_index, flickr_images) -> None:
    index, _, _ = mm_index
    retriever = index.as_retriever(similarity_top_k=2, image_similarity_top_k=2)
    ids = [p.stem for p in flickr_images]
    got = retriever.text_to_image_retrieve("a dog running on the grass")
    q = vlm.encode_queries(["a dog running on the grass"])
    want_ids, _ = _ranking(q, vlm.encode_documents(list(flickr_images)), ids, 2)
    assert [n.node.node_id for n in got] == want_ids
    both = retriever.retrieve("a dog running on the grass")  # captions (text store) + images
    assert len(both) == 4


def test_retriever_with_image_queries_and_image_hits(vlm, flickr_images) -> None:
    ts = TwoStageRetriever.create(vlm, dtype="float32")
    ids = [p.stem for p in flickr_images]
    ts.add_documents(
        list(flickr_images), ids=ids, metadatas=[{"image": str(p)} for p in flickr_images]
    )
    query = flickr_images[4]
    r = MetaEmbedRetriever(ts, similarity_top_k=3)
    got = r.retrieve(QueryBundle(query_str="", image_path=str(query)))
    want = ts.search(query, k=3)
    assert [(n.node.node_id, n.score) for n in got] == [(h.id, h.score) for h in want]
    assert all(isinstance(n.node, ImageNode) for n in got)
    assert got[0].node.image_path == str(flickr_images[ids.index(want[0].id)])
    agot = asyncio.run(r.aretrieve(QueryBundle(query_str="", image_path=query.as_uri())))
    assert [(n.node.node_id, n.score) for n in agot] == [(n.node.node_id, n.score) for n in got]


class _RecordingLLM(MockLLM):
    """MockLLM that keeps the messages of every chat call (a multimodal LLM stand-in)."""

    sent: list = Field(default_factory=list, exclude=True)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.sent.append(list(messages))
        return super().chat(messages, **kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        self.sent.append(list(messages))
        return await super().achat(messages, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "RecordingMultiModalMockLLM"


def _images_sent(llm: _RecordingLLM, images: list[Path]) -> list[str]:
    """Stems of the images the LLM received, in order, over every call."""
    by_bytes = {p.read_bytes(): p.stem for p in images}
    out = []
    for messages in llm.sent:
        for message in messages:
            for block in message.blocks:
                if isinstance(block, ImageBlock):
                    out.append(by_bytes[block.resolve_image(as_base64=False).read()])
    assert any(isinstance(b, TextBlock) for m in llm.sent[-1] for b in m.blocks)
    return out


def test_image_query_through_the_multimodal_query_engine(vlm, mm_index, flickr_images) -> None:
    """MultiModalVectorStoreIndex.as_query_engine().image_query with a mock multimodal LLM:
    MetaEmbed stores retrieve by multi-vector MaxSim, the LLM gets those images."""
    index, _, _ = mm_index
    llm = _RecordingLLM(max_tokens=6)
    with warnings.catch_warnings():  # SimpleMultiModalQueryEngine is deprecated in 0.14.23+
        warnings.simplefilter("ignore", DeprecationWarning)
        engine = index.as_query_engine(llm=llm, image_similarity_top_k=3)
    query = flickr_images[1]
    response = engine.image_query(str(query), "What do these pictures show?")
    assert response.response == " ".join(["text"] * 6)  # the mock LLM answered
    want_ids, want_scores = _ranking(
        vlm.encode_queries([query]),
        vlm.encode_documents(list(flickr_images)),
        [p.stem for p in flickr_images],
        3,
    )
    assert [n.node.node_id for n in response.source_nodes] == want_ids
    assert [n.score for n in response.source_nodes] == pytest.approx(want_scores, abs=1e-3)
    assert _images_sent(llm, flickr_images) == want_ids


def test_image_query_through_a_retriever_query_engine(
    vlm, vlm_embed, mm_index, flickr_images
) -> None:
    """RetrieverQueryEngine(multimodal=True) with MetaEmbedRetriever over the image store and
    MetaEmbedRerank: retrieval by the image alone (custom_embedding_strs=[]), the question
    goes to the mock LLM with the reranked images."""
    _, _, image_store = mm_index
    llm = _RecordingLLM(max_tokens=5, is_chat_model=True)
    engine = RetrieverQueryEngine.from_args(
        MetaEmbedRetriever.from_vector_store(image_store, similarity_top_k=4),
        llm=llm,
        multimodal=True,
        node_postprocessors=[MetaEmbedRerank(vlm_embed, top_n=2, budget=(8, 16))],
    )
    query = flickr_images[3]
    bundle = QueryBundle(
        query_str="What is in this picture?", image_path=str(query), custom_embedding_strs=[]
    )
    response = engine.query(bundle)
    assert response.response == " ".join(["text"] * 5)
    ids = [p.stem for p in flickr_images]
    docs = vlm.encode_documents(list(flickr_images))
    q = vlm.encode_queries([query])
    top4, _ = _ranking(q, docs, ids, 4)
    scores = maxsim(q, docs, (8, 16))[0]
    best = sorted(top4, key=lambda i: -float(scores[ids.index(i)]))[:2]
    assert [n.node.node_id for n in response.source_nodes] == best
    assert all(isinstance(n.node, ImageNode) for n in response.source_nodes)
    assert _images_sent(llm, flickr_images) == best
    aresponse = asyncio.run(engine.aquery(bundle))
    assert [n.node.node_id for n in aresponse.source_nodes] == best
