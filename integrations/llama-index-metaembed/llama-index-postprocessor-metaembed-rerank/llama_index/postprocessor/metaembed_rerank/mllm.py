"""``MLLMRerank``: MM-Embed's zero-shot MLLM reranker as a LlamaIndex node postprocessor (the
rules live in :class:`metaembed_rag.rerank.MLLMReranker`; see ``docs/gpu-vlm.md``).

Text nodes are scored from ``get_content(metadata_mode=EMBED)``, ``ImageNode``s from their
image; the query from ``QueryBundle.query_str`` (and ``image_path`` when the bundle has one).
The node's incoming score is the first-stage score fused in when the reranker's
``fusion_weight > 0``. Reports ``CBEventType.RERANKING`` and the rerank instrumentation events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from metaembed_rag.frameworks.llama_index.inputs import node_input
from metaembed_rag.rerank import MLLMReranker

__all__ = ["MLLMRerank"]

dispatcher = get_dispatcher(__name__)


class MLLMRerank(BaseNodePostprocessor):
    """Rerank nodes by a generative model's P("True") (MM-Embed style yes/no prompt).

    Args:
        reranker: the :class:`metaembed_rag.rerank.MLLMReranker` (e.g.
            ``MLLMReranker.from_pretrained("Qwen/Qwen2-VL-2B-Instruct")``).
        top_n: nodes kept, best first.
        callback_manager: receives the ``CBEventType.RERANKING`` event.
    """

    top_n: int = Field(default=5, ge=1, description="Number of nodes to return, best first.")
    model_name: str = Field(default="", description="The generative model's name (events).")
    _reranker: MLLMReranker = PrivateAttr()

    def __init__(
        self,
        reranker: MLLMReranker,
        *,
        top_n: int = 5,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(reranker, MLLMReranker):
            raise TypeError(
                f"reranker must be a metaembed_rag MLLMReranker, got {type(reranker).__name__}"
            )
        name = str(
            getattr(reranker.model.config, "_name_or_path", "") or type(reranker.model).__name__
        )
        super().__init__(
            top_n=top_n, model_name=name, callback_manager=callback_manager or CallbackManager(),
            **kwargs,
        )  # fmt: skip
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "MLLMRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("MLLMRerank needs the query: pass query_bundle or query_str.")
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model_name
            )
        )
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        image = getattr(query_bundle, "image_path", None)
        query: Any = query_bundle.query_str
        if image:
            query = (query, Path(image)) if query else Path(image)
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model_name,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            ranked = self._reranker.rerank(
                query,
                [node_input(n.node) for n in nodes],
                top_n=self.top_n,
                first_stage_scores=[n.score or 0.0 for n in nodes],
            )
            new_nodes = [NodeWithScore(node=nodes[i].node, score=s) for i, s in ranked]
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
