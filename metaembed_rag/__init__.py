"""metaembed-rag: MetaEmbed-style multi-vector retrieval for RAG frameworks.

Main entry points:

* :class:`MetaEmbedModel` — the encoder (Meta tokens on a ``transformers`` backbone);
* :class:`Budget` — a retrieval budget ``(r_q, r_c)``;
* :func:`maxsim`, :func:`maxsim_pairwise`, :func:`maxsim_ids` — budgeted late-interaction scores;
* :class:`MultiVectorIndex` and :class:`TwoStageRetriever` — storage and two-stage search.
"""

from __future__ import annotations

import logging

from .budget import DEFAULT_BUDGETS, Budget, parse_budgets, resolve_budget
from .config import MetaEmbedConfig
from .index import MultiVectorIndex, SearchParams
from .index.hits import Hit
from .model import DEFAULT_BACKBONE, DEFAULT_MODEL, MetaEmbedModel
from .retriever import TwoStageRetriever
from .scoring import maxsim, maxsim_ids, maxsim_pairwise

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "DEFAULT_BACKBONE",
    "DEFAULT_BUDGETS",
    "DEFAULT_MODEL",
    "Hit",
    "MultiVectorIndex",
    "SearchParams",
    "TwoStageRetriever",
    "MetaEmbedConfig",
    "MetaEmbedModel",
    "maxsim",
    "maxsim_ids",
    "maxsim_pairwise",
    "parse_budgets",
    "resolve_budget",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
