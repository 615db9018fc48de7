"""``QdrantBackend``: a :class:`~metaembed_rag.index.backend.StorageBackend` in a Qdrant collection.

Install with ``pip install "metaembed-rag[qdrant]"``. The backend takes a ``QdrantClient`` (a
server URL, Qdrant Cloud, or local mode: ``QdrantClient(":memory:")`` /
``QdrantClient(path=...)``) and a collection name. Schema of the collection (one point per
document, point id = the index's row handle)::

    vectors  "coarse"   dense (D,)        the coarse vector (renormalised mean of the K
                                          document vectors, or the first one), DOT, HNSW
             "mv<r>"    multi-vector (r, D) for each stored prefix length r (default: only
                                          r = K, the full 64), MAX_SIM comparator over DOT,
                                          no HNSW graph (m=0: it is only used to rerank)
    payload  doc_id (keyword), row (integer), text, metadata (the user's dict),
             keys (the dotted paths present in metadata: what ``$exists`` tests)
    collection metadata "metaembed": the index's settings (model fingerprint, dim, budgets...)

A search is **one Qdrant query**: ``prefetch`` ``pool`` points on ``coarse`` (with the
translated payload filter, :mod:`~metaembed_rag.index.qdrant_filters`), optionally a nested
MaxSim prefetch at the cascade budget, then MaxSim at the rerank budget ``(r_q, r_c)``: the
first ``r_q`` query vectors are sent, ``r_c`` picks the stored ``mv<r_c>`` vector. A budget
whose ``r_c`` is not stored falls back to the generic path (Qdrant prefetch for the
candidates, document vectors fetched and scored here), which is exact but moves vectors.

Storage per document (float32): ``D * 4 * (1 + sum(prefixes))`` bytes. The default model's
trained budgets rerank at r_c = 4, 8, 16 or 64; storing 4, 8 and 16 beside the full 64 costs
``(4 + 8 + 16 + 64) / 64 = 1.44x`` the full-64 vectors alone; ``datatype="float16"`` halves
either. See ``docs/scale-out.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..budget import Budget
from ..extras import require
from .backend import Record, SearchPlan, StorageBackend, StorageInfo
from .filters import Filter
from .multivector import MultiVectorIndex
from .qdrant_filters import KEYS, METADATA, metadata_keys, to_qdrant_filter
from .validate import DocumentBatch

__all__ = ["QdrantBackend", "qdrant_client_for", "qdrant_index", "require_qdrant"]

logger = logging.getLogger(__name__)

#: The named dense vector of the coarse stage.
COARSE = "coarse"
#: Collection-metadata key holding the index's settings.
SETTINGS_KEY = "metaembed"


def require_qdrant() -> Any:
    """The ``qdrant_client`` module, or an ImportError naming the extra."""
    return require("qdrant_client", "pip install 'metaembed-rag[qdrant]'", "The Qdrant backend")


def qdrant_client_for(location: str) -> Any:
    """A ``QdrantClient`` for ``location``: an ``http(s)://`` URL (a server or Qdrant Cloud;
    the API key is read from ``QDRANT_API_KEY``), ``:memory:``, or a local folder (local
    mode, one process at a time)."""
    import os

    qc = require_qdrant()
    if location.startswith(("http://", "https://")):
        return qc.QdrantClient(url=location, api_key=os.environ.get("QDRANT_API_KEY"))
    if location == ":memory:":
        return qc.QdrantClient(":memory:")
    return qc.QdrantClient(path=str(Path(location).expanduser()))


def _mv(r: int) -> str:
    return f"mv{r}"


class QdrantBackend(StorageBackend):
    """Documents as points of a Qdrant collection; search runs in Qdrant.

    Args:
        client: a ``qdrant_client.QdrantClient`` (server, cloud or local mode).
        collection: the collection name (created when missing, with the options below;
            an existing one is opened and its schema checked).
        dim: vector width D.
        num_vectors: vectors per document K.
        prefixes: the prefix lengths ``r_c`` stored as ``mv<r>`` multi-vectors (default:
            ``(K,)``; pass the trained groups, e.g. ``(4, 16, 64)``, to rerank at smaller
            ``r_c`` inside Qdrant, at the storage cost above). Budgets with another ``r_c``
            are scored here on fetched vectors.
        coarse_vector: ``"first"`` (the (1,1) vector, default) or ``"mean"`` (renormalised
            mean of the K vectors; the query side uses its own renormalised mean), as in
            ``MultiVectorIndex``.
        datatype: ``"float32"`` (default, exact), ``"float16"`` or ``"uint8"`` (Qdrant's vector
            datatypes).
        on_disk: keep the vectors on disk (memory-mapped by Qdrant) instead of RAM.
        quantization: a Qdrant quantization config (``models.ScalarQuantization(...)``,
            ``BinaryQuantization``, ``ProductQuantization``), passed through to the collection.
        hnsw_config: a ``models.HnswConfigDiff`` for the coarse vector.
        shard_number, replication_factor, on_disk_payload: passed to ``create_collection``
            (a Qdrant cluster).
        write_batch: points per upsert request.
    """

    remote = True

    def __init__(
        self,
        client: Any,
        collection: str,
        dim: int,
        num_vectors: int,
        *,
        prefixes: Sequence[int] | None = None,
        coarse_vector: Literal["mean", "first"] = "first",
        datatype: str = "float32",
        on_disk: bool = False,
        quantization: Any = None,
        hnsw_config: Any = None,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        on_disk_payload: bool | None = None,
        write_batch: int = 256,
    ) -> None:
        qc = require_qdrant()
        self.models = qc.models
        self.client, self.collection = client, collection
        self.dim, self.num_vectors = int(dim), int(num_vectors)
        self.prefixes = tuple(sorted(set(prefixes or (self.num_vectors,))))
        if not self.prefixes or not all(1 <= r <= self.num_vectors for r in self.prefixes):
            raise ValueError(
                f"prefixes must be vector counts between 1 and {self.num_vectors}, "
                f"got {prefixes!r}."
            )
        if coarse_vector not in ("mean", "first"):
            raise ValueError(f"coarse_vector must be 'mean' or 'first', got {coarse_vector!r}.")
        self.coarse_vector = coarse_vector
        self.write_batch = int(write_batch)
        if client.collection_exists(collection):
            self._check_schema()
        else:
            self._create(datatype, on_disk, quantization, hnsw_config, shard_number,
                         replication_factor, on_disk_payload)  # fmt: skip
        self._next_row = self._max_row() + 1

    # ------------------------------------------------------------------ schema
    def _create(
        self,
        datatype: str,
        on_disk: bool,
        quantization: Any,
        hnsw_config: Any,
        shard_number: int | None,
        replication_factor: int | None,
        on_disk_payload: bool | None,
    ) -> None:
        m = self.models
        try:
            dtype = m.Datatype(datatype)
        except ValueError as exc:
            raise ValueError(
                f"datatype must be one of {[d.value for d in m.Datatype]}, got {datatype!r}."
            ) from exc
        vectors = {
            COARSE: m.VectorParams(
                size=self.dim, distance=m.Distance.DOT, on_disk=on_disk, datatype=dtype,
                hnsw_config=hnsw_config,
            )
        }  # fmt: skip
        for r in self.prefixes:
            vectors[_mv(r)] = m.VectorParams(
                size=self.dim, distance=m.Distance.DOT, on_disk=on_disk, datatype=dtype,
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                hnsw_config=m.HnswConfigDiff(m=0),  # rerank only: no graph to build
            )  # fmt: skip
        schema = {"dim": self.dim, "num_vectors": self.num_vectors, "prefixes": self.prefixes,
                  "coarse_vector": self.coarse_vector}  # fmt: skip
        self.client.create_collection(
            self.collection, vectors_config=vectors, quantization_config=quantization,
            shard_number=shard_number, replication_factor=replication_factor,
            on_disk_payload=on_disk_payload, metadata={SETTINGS_KEY: {"schema": schema}},
        )  # fmt: skip
        for key, kind in (("doc_id", m.PayloadSchemaType.KEYWORD),
                          ("row", m.PayloadSchemaType.INTEGER),
                          (KEYS, m.PayloadSchemaType.KEYWORD)):  # fmt: skip
            self._payload_index(key, kind)
        logger.info("created Qdrant collection %s (prefixes %s)", self.collection, self.prefixes)

    def _payload_index(self, key: str, kind: Any) -> None:
        import warnings

        with warnings.catch_warnings():  # local mode: "payload indexes have no effect"
            warnings.simplefilter("ignore", UserWarning)
            self.client.create_payload_index(self.collection, key, kind)

    def settings(self) -> dict[str, Any]:
        """What the collection's metadata records (``schema``, and ``index`` once saved)."""
        meta = self.client.get_collection(self.collection).config.metadata or {}
        return dict(meta.get(SETTINGS_KEY) or {})

    def _check_schema(self) -> None:
        schema = self.settings().get("schema")
        if schema is None:
            raise ValueError(
                f"Qdrant collection {self.collection!r} was not created by metaembed-rag "
                "(no 'metaembed' metadata); choose another collection name."
            )
        mine = {"dim": self.dim, "num_vectors": self.num_vectors}
        theirs = {k: schema.get(k) for k in mine}
        if mine != theirs:
            raise ValueError(
                f"Qdrant collection {self.collection!r} holds {theirs}, not {mine}: use the "
                "model it was built with, or another collection name."
            )
        self.prefixes = tuple(schema["prefixes"])
        self.coarse_vector = schema["coarse_vector"]

    def _max_row(self) -> int:
        points, _ = self.client.scroll(
            self.collection, limit=1, with_payload=False, with_vectors=False,
            order_by=self.models.OrderBy(key="row", direction=self.models.Direction.DESC),
        )  # fmt: skip
        return int(points[0].id) if points else -1

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    @property
    def num_rows(self) -> int:
        return self._next_row

    def describe(self) -> StorageInfo:
        """Qdrant's prefetch on ``coarse``; float32 bytes of the stored vectors."""
        per = self.dim * 4 * (1 + sum(self.prefixes))
        return {"coarse_kind": "qdrant", "bytes_per_document": per}

    # ------------------------------------------------------------------ writing
    def _coarse(self, docs: np.ndarray) -> np.ndarray:
        """``(n, D)`` coarse vectors of ``(n, K, D)`` documents (or queries)."""
        if self.coarse_vector == "first":
            return docs[:, 0]
        mean = docs.mean(axis=1)
        return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)

    def add(self, batch: DocumentBatch) -> None:
        if not batch.ids:
            return
        m = self.models
        coarse = self._coarse(batch.vectors)
        for s in range(0, len(batch.ids), self.write_batch):
            points = []
            for i in range(s, min(len(batch.ids), s + self.write_batch)):
                row = self._next_row + i
                vec = {COARSE: coarse[i].tolist()}
                for r in self.prefixes:
                    vec[_mv(r)] = batch.vectors[i, :r].tolist()
                meta = batch.metadatas[i]
                payload = {"doc_id": batch.ids[i], "row": row, "text": batch.texts[i],
                           METADATA: meta, KEYS: metadata_keys(meta)}  # fmt: skip
                points.append(m.PointStruct(id=row, vector=vec, payload=payload))
            self.client.upsert(self.collection, points=points, wait=True)
        self._next_row += len(batch.ids)

    def delete(self, ids: Sequence[str]) -> int:
        rows = self.rows_of(ids)
        rows = rows[rows >= 0]
        if rows.size:
            self.client.delete(
                self.collection, points_selector=self.models.PointIdsList(points=rows.tolist()),
                wait=True,
            )  # fmt: skip
        return int(rows.size)

    # ------------------------------------------------------------------ records
    def _scroll(self, flt: Any, payload: Any = False) -> Iterator[Any]:
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection, scroll_filter=flt, limit=4096, offset=offset,
                with_payload=payload, with_vectors=False,
            )  # fmt: skip
            yield from points
            if offset is None:
                return

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        m = self.models
        where: dict[str, int] = {}
        ids = list(ids)
        for s in range(0, len(ids), 1024):
            chunk = ids[s : s + 1024]
            flt = m.Filter(must=[m.FieldCondition(key="doc_id", match=m.MatchAny(any=chunk))])
            for p in self._scroll(flt, ["doc_id"]):
                where[p.payload["doc_id"]] = int(p.id)
        return np.array([where.get(i, -1) for i in ids], dtype=np.int64)

    def records(self, rows: np.ndarray) -> list[Record]:
        wanted = [int(r) for r in np.asarray(rows).tolist()]
        if not wanted:
            return []
        got = {
            int(p.id): p.payload
            for p in self.client.retrieve(self.collection, list(set(wanted)), with_payload=True)
        }
        out = []
        for r in wanted:
            if r not in got:
                raise KeyError(f"Row {r} holds no live document (deleted).")
            pl = got[r]
            out.append(Record(pl["doc_id"], pl.get("text"), dict(pl.get(METADATA) or {})))
        return out

    # ------------------------------------------------------------------ generic search path
    def allowed(self, filter: Filter | None) -> np.ndarray:
        rows = [int(p.id) for p in self._scroll(to_qdrant_filter(filter))]
        if rows:  # another writer may have added rows since this backend counted them
            self._next_row = max(self._next_row, max(rows) + 1)
        mask = np.zeros(self._next_row, dtype=bool)
        mask[rows] = True
        return mask

    def candidates(
        self, queries: torch.Tensor, pool: int, allowed: np.ndarray, filtered: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        m = self.models
        nq = queries.shape[0]
        allowed_rows = np.flatnonzero(allowed).astype(np.int64)
        if pool >= allowed_rows.size:  # every matching row is a candidate: exact
            cand = np.broadcast_to(allowed_rows, (nq, allowed_rows.size)).copy()
            return cand, np.ones(cand.shape, dtype=bool)
        flt = m.Filter(must=[m.HasIdCondition(has_id=allowed_rows.tolist())]) if filtered else None
        qc = self._coarse(queries.numpy())
        requests = [
            m.QueryRequest(query=v.tolist(), using=COARSE, filter=flt, limit=pool) for v in qc
        ]
        res = self.client.query_batch_points(self.collection, requests)
        cand = np.full((nq, pool), allowed_rows[0], dtype=np.int64)
        valid = np.zeros((nq, pool), dtype=bool)
        for i, r in enumerate(res):
            ids = [int(p.id) for p in r.points]
            cand[i, : len(ids)] = ids
            valid[i, : len(ids)] = True
        return cand, valid

    def _stored_for(self, r_c: int) -> int:
        for r in self.prefixes:
            if r >= r_c:
                return r
        raise ValueError(
            f"This Qdrant collection stores prefixes {self.prefixes}; r_c={r_c} needs a "
            "longer one: rebuild the collection with prefixes including it."
        )

    def fetch(self, rows: np.ndarray, r_c: int | None = None) -> torch.Tensor:
        r_c = r_c or self.num_vectors
        name = _mv(self._stored_for(r_c))
        wanted = [int(r) for r in np.asarray(rows).tolist()]
        got = {
            int(p.id): p.vector[name]
            for p in self.client.retrieve(self.collection, list(set(wanted)), with_vectors=[name])
        }
        out = np.empty((len(wanted), r_c, self.dim), dtype=np.float32)
        for n, r in enumerate(wanted):
            out[n] = np.asarray(got[r], dtype=np.float32)[:r_c]
        return torch.from_numpy(out)

    def score(self, queries: torch.Tensor, rows: np.ndarray, budget: Budget) -> np.ndarray:
        """Qdrant's MaxSim on the given rows when ``mv<r_c>`` is stored, else the default."""
        if rows.shape[1] == 0 or budget.r_c not in self.prefixes:
            return super().score(queries, rows, budget)
        m = self.models
        requests = []
        for i in range(rows.shape[0]):
            ids = np.unique(rows[i]).tolist()
            flt = m.Filter(must=[m.HasIdCondition(has_id=ids)])
            q = queries[i, : budget.r_q].tolist()
            requests.append(
                m.QueryRequest(query=q, using=_mv(budget.r_c), filter=flt, limit=len(ids))
            )
        out = np.full(rows.shape, -np.inf, dtype=np.float32)
        for i, res in enumerate(self.client.query_batch_points(self.collection, requests)):
            got = {int(p.id): p.score for p in res.points}
            out[i] = [got.get(int(r), -np.inf) for r in rows[i]]
        return out

    # ------------------------------------------------------------------ native search
    def native_search(
        self, queries: torch.Tensor, plan: SearchPlan
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """One Qdrant query per query vector set (sent as one batch): prefetch on ``coarse``
        (filtered, ``pool``), [MaxSim prefetch at the cascade budget, ``fetch``], MaxSim at the
        rerank budget (``k``). ``None`` when a budget's ``r_c`` is not stored as ``mv<r_c>``."""
        m = self.models
        if plan.rerank.r_c not in self.prefixes:
            return None
        cascade = plan.recall != Budget(1, 1)
        if cascade and not plan.exhaustive and plan.recall.r_c not in self.prefixes:
            return None
        flt = to_qdrant_filter(plan.filter)
        qc = self._coarse(queries.numpy())
        requests = []
        for i in range(queries.shape[0]):
            final = queries[i, : plan.rerank.r_q].tolist()
            if plan.exhaustive:  # MaxSim over every matching point (no graph on mv<r>: exact)
                prefetch = None
            else:
                prefetch = m.Prefetch(query=qc[i].tolist(), using=COARSE, filter=flt,
                                      limit=plan.pool)  # fmt: skip
                if cascade and plan.pool > plan.fetch:
                    prefetch = m.Prefetch(
                        prefetch=prefetch, query=queries[i, : plan.recall.r_q].tolist(),
                        using=_mv(plan.recall.r_c), limit=plan.fetch,
                    )  # fmt: skip
            requests.append(
                m.QueryRequest(
                    prefetch=prefetch,
                    query=final,
                    using=_mv(plan.rerank.r_c),
                    filter=flt,
                    limit=plan.k,
                )  # fmt: skip
            )
        nq = queries.shape[0]
        scores = np.full((nq, plan.k), -np.inf, dtype=np.float32)
        rows = np.full((nq, plan.k), -1, dtype=np.int64)
        for i, res in enumerate(self.client.query_batch_points(self.collection, requests)):
            for j, p in enumerate(res.points):
                scores[i, j], rows[i, j] = p.score, int(p.id)
        return scores, rows

    # ------------------------------------------------------------------ persistence
    def save(self, target: Path, header: dict[str, Any]) -> Path:
        """Record ``header`` (the index's settings) in the collection's metadata; ``target``
        is not written (the collection persists itself). Returns ``target``."""
        settings = self.settings()
        settings["index"] = header
        self.client.update_collection(self.collection, metadata={SETTINGS_KEY: settings})
        return target

    def drop(self) -> None:
        """Delete the whole Qdrant collection (e.g. a new one whose first run failed)."""
        self.client.delete_collection(self.collection)
        self._next_row = 0

    def close(self) -> None:
        """Close the client (a local-mode folder is released for other processes)."""
        self.client.close()


def qdrant_index(
    client: Any, collection: str, model: Any = None, **options: Any
) -> MultiVectorIndex:
    """A :class:`~metaembed_rag.index.MultiVectorIndex` on a Qdrant collection.

    An existing collection is opened with the settings its last ``index.save()`` recorded (and
    checked against ``model`` when given); a new one is created for ``model``.

    Args:
        client: a ``QdrantClient`` (or a location string for :func:`qdrant_client_for`).
        collection: the collection name.
        model: a ``MetaEmbedModel`` (required for a new collection).
        options: :class:`QdrantBackend` options for a new collection (``prefixes=``,
            ``datatype=``, ``on_disk=``, ``quantization=``...), and ``MultiVectorIndex``'s
            ``recall_pool_factor=``.

    Raises:
        ValueError: a new collection without a model, or another model's collection.
        IndexMismatchError: the model does not match the saved fingerprint.
    """
    if isinstance(client, str):
        client = qdrant_client_for(client)
    pool = {k: options.pop(k) for k in ("recall_pool_factor",) if k in options}
    if client.collection_exists(collection):
        backend_probe = client.get_collection(collection).config.metadata or {}
        header = (backend_probe.get(SETTINGS_KEY) or {}).get("index")
        schema = (backend_probe.get(SETTINGS_KEY) or {}).get("schema")
        if header is not None and schema is not None:
            backend = QdrantBackend(client, collection, schema["dim"], schema["num_vectors"])
            index = MultiVectorIndex(
                header["dim"], num_vectors=header["vectors_per_doc"],
                budgets=[tuple(b) for b in header["budgets"]], dtype="float32",
                coarse_vector=backend.coarse_vector,
                fingerprint=header.get("model_fingerprint"), backend=backend,
                **{**header.get("options", {}), **pool},
            )  # fmt: skip
            if model is not None:
                index.check_compatible(model)
            return index
    if model is None:
        raise ValueError(
            f"Qdrant collection {collection!r} holds no saved metaembed index: pass the model "
            "to create it."
        )
    backend = QdrantBackend(
        client, collection, model.dim, model.config.num_candidate_tokens, **options
    )
    index = MultiVectorIndex.for_model(
        model, dtype="float32", coarse_vector=backend.coarse_vector, backend=backend, **pool
    )
    index.save()  # records the settings in the collection
    return index
