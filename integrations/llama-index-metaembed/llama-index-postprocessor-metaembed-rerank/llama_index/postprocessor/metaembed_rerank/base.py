"""``MetaEmbedRerank``: rerank any retriever's nodes with budgeted MaxSim.

The query is encoded once (``R_q`` query vectors, from ``QueryBundle.embedding_strs`` and
``image_path``, like ``MetaEmbedRetriever``: the reranker scores what the retriever searched
for); each node's document multi-vector comes from a cache keyed by ``(node id, content hash)``
or is encoded in batches of ``batch_size``; the score is the exact MaxSim sum at ``budget``
(:func:`metaembed_rag.maxsim`). Text nodes are encoded from
``get_content(metadata_mode=EMBED)``, ``ImageNode``s from their image (base64 ``image``,
``image_path`` or ``image_url``).

Scores (docs/scores.md): ``score_mode="maxsim"`` (default) sets each node's score to the raw
MaxSim sum; ``"relevance"`` to the model's calibrated 0-1 relevance
(:func:`metaembed_rag.relevance.relevance_scores`), like Cohere's reranker, so a 0.5 cutoff
(``SimilarityPostprocessor(similarity_cutoff=0.5)`` after it) is meaningful. The order is the
same either way.

Like llama-index-core's own rerankers it reports a ``CBEventType.RERANKING`` callback event and
the ``ReRankStartEvent`` / ``ReRankEndEvent`` instrumentation events.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Literal

import torch
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from metaembed_rag import Budget
from metaembed_rag.budget import BudgetLike
from metaembed_rag.frameworks.llama_index import MetaEmbedEmbedding
from metaembed_rag.frameworks.llama_index.inputs import content_hash, node_input
from metaembed_rag.relevance import relevance_scores
from metaembed_rag.scorers import resolve_scorer

__all__ = ["MetaEmbedRerank", "RETRIEVAL_SCORE_KEY"]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

#: Metadata key that keeps the retriever's score when ``keep_retrieval_score=True``.
RETRIEVAL_SCORE_KEY = "retrieval_score"


class MetaEmbedRerank(BaseNodePostprocessor):
    """Budgeted MaxSim reranker.

    Args:
        embed_model: the :class:`MetaEmbedEmbedding` to encode with (default: a new one for
            ``model_name``).
        model_name: built-in model or folder, when ``embed_model`` is not given (default:
            the embedded default model).
        model_fingerprint: when given, the loaded model must have it (``to_dict`` records
            it, so ``from_dict`` cannot silently load another model).
        top_n: nodes kept, best first.
        budget: MaxSim budget ``(r_q, r_c)`` (``None``: the model's largest, (16,64)).
        batch_size: documents per encoding batch.
        keep_retrieval_score: store each node's incoming score in
            ``node.metadata["retrieval_score"]`` (excluded from embedding and LLM text).
        cache_mb: MiB of document multi-vectors kept, keyed by node id and content hash
            (64 float32 vectors of D=384 are 96 KiB: the default 64 MiB holds about 680
            nodes); ``0`` disables the cache.
        score_mode: ``"maxsim"`` (raw MaxSim sum) or ``"relevance"`` (calibrated 0-1).
        callback_manager: receives the ``CBEventType.RERANKING`` event.
        scorer: the late-interaction scorer (``None``: MaxSim; ``"pooled"``, a folder from
            ``metaembed-rag train-scorer`` or a ``metaembed_rag.scorers.Scorer``; not part of
            ``to_dict``).
    """

    top_n: int = Field(default=5, description="Number of nodes to return, best first.", ge=1)
    budget: tuple[int, int] | None = Field(
        default=None, description="MaxSim budget (r_q, r_c); None: the model's largest."
    )
    batch_size: int = Field(default=16, description="Documents per encoding batch.", ge=1)
    keep_retrieval_score: bool = Field(
        default=False, description="Keep the retrieval score in metadata['retrieval_score']."
    )
    cache_mb: float = Field(
        default=64.0,
        description="MiB of document multi-vectors cached by (node id, content hash).",
        ge=0,
    )
    model_name: str | None = Field(
        default=None,
        description="Built-in name or folder of the MetaEmbed model (None: the default model "
        "or, with embed_model given, an in-memory model).",
    )
    model_fingerprint: str | None = Field(
        default=None, description="MetaEmbedModel.fingerprint() of the model (checked on load)."
    )
    score_mode: Literal["maxsim", "relevance"] = Field(
        default="maxsim",
        description="Node score: 'maxsim' (raw MaxSim sum) or 'relevance' (calibrated 0-1).",
    )

    _embed_model: MetaEmbedEmbedding = PrivateAttr()
    _cache: OrderedDict[tuple[str, str], torch.Tensor] = PrivateAttr(default_factory=OrderedDict)
    _cache_bytes: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _encoded: int = PrivateAttr(default=0)
    _scorer: Any = PrivateAttr(default=None)

    def __init__(
        self,
        embed_model: MetaEmbedEmbedding | None = None,
        *,
        model_name: str | None = None,
        model_fingerprint: str | None = None,
        top_n: int = 5,
        budget: BudgetLike | None = None,
        batch_size: int = 16,
        keep_retrieval_score: bool = False,
        cache_mb: float = 64.0,
        score_mode: Literal["maxsim", "relevance"] = "maxsim",
        callback_manager: CallbackManager | None = None,
        scorer: Any = None,
        **kwargs: Any,
    ) -> None:
        if embed_model is None:
            embed_model = (
                MetaEmbedEmbedding(model_fingerprint=model_fingerprint)
                if model_name is None
                else MetaEmbedEmbedding(model_name, model_fingerprint=model_fingerprint)
            )
        elif not isinstance(embed_model, MetaEmbedEmbedding):
            raise TypeError(
                "embed_model must be a MetaEmbedEmbedding (metaembed_rag.frameworks.llama_index, "
                "also exported by llama_index.embeddings.metaembed), "
                f"got {type(embed_model).__name__}."
            )
        elif model_fingerprint not in (None, embed_model.model_fingerprint):
            raise ValueError(
                f"embed_model's model has fingerprint {embed_model.model_fingerprint!r}, not "
                f"the recorded {model_fingerprint!r}; pass the matching model."
            )
        resolved = embed_model.model.resolve_budget(budget)
        super().__init__(
            top_n=top_n,
            budget=resolved.as_tuple(),
            batch_size=batch_size,
            keep_retrieval_score=keep_retrieval_score,
            cache_mb=cache_mb,
            score_mode=score_mode,
            model_name=embed_model.model_name,
            model_fingerprint=embed_model.model_fingerprint,
            callback_manager=callback_manager or CallbackManager(),
            **kwargs,
        )
        self._embed_model = embed_model
        self._scorer = resolve_scorer(scorer)
        self._scorer.check_compatible(embed_model.model_fingerprint, embed_model.model.dim)

    @classmethod
    def class_name(cls) -> str:
        return "MetaEmbedRerank"

    @property
    def event_model_name(self) -> str:
        """The model name reported in rerank events."""
        return self.model_name or f"metaembed (fingerprint {self.model_fingerprint})"

    @property
    def embed_model(self) -> MetaEmbedEmbedding:
        """The :class:`MetaEmbedEmbedding` that encodes queries and nodes."""
        return self._embed_model

    @property
    def num_encoded(self) -> int:
        """Documents encoded so far (cache misses), for monitoring the cache."""
        with self._lock:
            return self._encoded

    def clear_cache(self) -> None:
        """Drop every cached document multi-vector."""
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0

    def _cache_put(self, key: tuple[str, str], value: torch.Tensor) -> None:
        """Keep ``value`` (an own copy, LRU, at most ``cache_mb``); call with the lock held."""
        cap = int(self.cache_mb * 1024 * 1024)
        old = self._cache.pop(key, None)
        if old is not None:
            self._cache_bytes -= old.nbytes
        if value.nbytes > cap:
            return
        self._cache[key] = value
        self._cache_bytes += value.nbytes
        while self._cache_bytes > cap:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= dropped.nbytes

    def _document_vectors(self, nodes: list[NodeWithScore]) -> torch.Tensor:
        """``(n, R_c, D)`` float32: cached multi-vectors, encoding the misses in batches."""
        keys = [(n.node.node_id, content_hash(n.node)) for n in nodes]
        out: list[torch.Tensor | None] = []
        with self._lock:
            for key in keys:
                vec = self._cache.get(key)
                if vec is not None:
                    self._cache.move_to_end(key)
                out.append(vec)
        missing = [i for i, v in enumerate(out) if v is None]
        timeout = self._embed_model.url_timeout
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            items = [node_input(nodes[i].node, timeout=timeout) for i in chunk]
            vectors = self._embed_model.model.encode_documents(
                items, batch_size=self.batch_size, max_length=self._embed_model.max_length
            )
            with self._lock:
                self._encoded += len(chunk)
                for j, i in enumerate(chunk):
                    # an own copy: a view would keep the whole batch tensor alive
                    out[i] = vectors[j].clone()
                    if self.cache_mb > 0:
                        self._cache_put(keys[i], out[i])  # type: ignore[arg-type]
        return torch.stack([v for v in out if v is not None])

    def score(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> list[float]:
        """MaxSim scores of ``nodes`` for the query at ``budget``, in input order.

        Returns:
            one float per node (a sum over the ``r_q`` query vectors of the best match among
            the node's first ``r_c`` vectors).
        """
        if not nodes:
            return []
        q = self._embed_model.get_query_bundle_multi_vector(query_bundle).unsqueeze(0)
        docs = self._document_vectors(nodes)
        return self._scorer.score(q, docs, Budget.parse(self.budget))[0].tolist()

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("MetaEmbedRerank needs the query: pass query_bundle or query_str.")
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.event_model_name
            )
        )
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.event_model_name,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            scores = self.score(nodes, query_bundle)
            order = sorted(range(len(nodes)), key=lambda i: (-scores[i], i))[: self.top_n]
            if self.score_mode == "relevance":
                scores = relevance_scores(self._embed_model.model, scores, self.budget)
            new_nodes = []
            for i in order:
                node = nodes[i].node
                if self.keep_retrieval_score:
                    node.metadata[RETRIEVAL_SCORE_KEY] = nodes[i].score
                    for excluded in (
                        node.excluded_embed_metadata_keys,
                        node.excluded_llm_metadata_keys,
                    ):
                        if RETRIEVAL_SCORE_KEY not in excluded:
                            excluded.append(RETRIEVAL_SCORE_KEY)
                new_nodes.append(NodeWithScore(node=node, score=scores[i]))
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
