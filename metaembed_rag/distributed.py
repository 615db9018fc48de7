"""Distributed document encoding on a Ray cluster (``pip install "metaembed-rag[ray]"``).

:class:`RayEncoder` keeps one model per worker (an actor pool, a GPU per worker when the
cluster has GPUs) and has the ``encode_documents`` contract of
:class:`~metaembed_rag.MetaEmbedModel`: it cuts the same batches the model would
(:func:`~metaembed_rag.model.encode_order`), sends them to the workers and puts the vectors back
in input order, so on the CPU the result is bitwise that of one process. A collection (local
folder or Qdrant, :mod:`metaembed_rag.collection`) encodes through it when given one
(``collection.encoder = RayEncoder(...)``, or :func:`index_paths_with_ray`, or ``metaembed-rag
index PATH --ray [ADDRESS]``), so everything else stays as in one process: the driver reads
and chunks files, writes rows into the index (the single writer) and commits at file
boundaries (``files.json``), which makes a run resumable after a crash without duplicate or
missing documents. A worker that dies is restarted and its batch retried
(``max_restarts`` / ``max_task_retries``), so the run loses nothing.

Limits (see ``docs/scale-out.md``): vectors travel back to the driver (48 KiB per chunk for the
default model in float32... 96 KiB), and files are encoded one after the other (a file's
chunks, up to ``ENCODE_BLOCK`` at a time, are spread over the workers), so the speed-up
needs files with many chunks (JSONL / Parquet corpora, long PDFs), not folders of tiny files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .extras import require

__all__ = ["RayEncoder", "index_paths_with_ray", "require_ray"]

logger = logging.getLogger(__name__)


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError naming the extra."""
    return require("ray", "pip install 'metaembed-rag[ray]'", "Distributed encoding")


class _Worker:
    """One model on one worker (a Ray actor; built by :class:`RayEncoder`)."""

    def __init__(self, model: str, device: str | None, threads: int, fail_marker: str | None):
        torch.set_num_threads(threads)
        from .hub import load_model

        self.model = load_model(model, device)
        self.fail_marker = fail_marker

    def encode(self, inputs: list[Any], max_length: int | None) -> np.ndarray:
        if self.fail_marker:  # fault injection (tests): the one worker whose unlink wins exits
            try:
                os.unlink(self.fail_marker)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)
        vectors = self.model.encode_documents(
            inputs, batch_size=len(inputs), max_length=max_length, show_progress_bar=False
        )
        return vectors.numpy()

    def pid(self) -> int:
        return os.getpid()


class RayEncoder:
    """``encode_documents`` on a pool of Ray workers, one model each.

    Args:
        model: the model name or folder each worker loads (``hub.load_model``).
        address: a Ray cluster address (``"auto"``, ``"ray://head:10001"``); ``None`` starts
            (or joins) a local cluster. A Ray session already initialised is reused.
        num_workers: workers (default: the cluster's GPUs if any, else its CPUs / threads).
        threads: torch threads per worker (CPU).
        gpus_per_worker: GPUs per worker (default: 1 when the cluster has GPUs, else 0).
        max_restarts: restarts of a worker that dies; its batch is retried as often.
        num_cpus: CPUs of a local cluster started here (default: Ray's count).

    Raises:
        ImportError: Ray is not installed (the ``ray`` extra).
    """

    def __init__(
        self,
        model: str,
        *,
        address: str | None = None,
        num_workers: int | None = None,
        threads: int = 1,
        gpus_per_worker: float | None = None,
        max_restarts: int = 3,
        num_cpus: int | None = None,
        _fail_marker: str | None = None,
    ) -> None:
        ray = require_ray()
        if not isinstance(model, (str, os.PathLike)):
            raise TypeError(
                "RayEncoder needs a model name or folder (each worker loads its own copy), "
                f"not a {type(model).__name__}; save the model and pass its folder."
            )
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None and num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
            ray.init(address=address, **kwargs)
        res = ray.cluster_resources()
        gpus = float(res.get("GPU", 0))
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if gpus >= 1 else 0.0
        if num_workers is None:
            num_workers = int(gpus // gpus_per_worker) if gpus_per_worker else 0
            num_workers = num_workers or max(1, int(res.get("CPU", 1) // threads))
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
        device = "cuda" if gpus_per_worker else "cpu"
        actor = ray.remote(
            num_cpus=threads if not gpus_per_worker else 1,
            num_gpus=gpus_per_worker,
            max_restarts=max_restarts,
            max_task_retries=max_restarts,
        )(_Worker)
        model = str(model)
        self.model_ref = model
        self.workers = [
            actor.remote(model, device, threads, _fail_marker) for _ in range(num_workers)
        ]
        self._ray = ray
        logger.info("Ray encoder: %d worker(s) of %s on %s", num_workers, model, device)

    @property
    def num_workers(self) -> int:
        return len(self.workers)

    def worker_pids(self) -> list[int]:
        """The process id of each worker (changes when a worker was restarted)."""
        return list(self._ray.get([w.pid.remote() for w in self.workers]))

    def encode_documents(
        self,
        documents: Sequence[Any],
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        show_progress_bar: bool | None = None,
        output_dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """``(n, R_c, D)`` vectors, bitwise those of ``MetaEmbedModel.encode_documents`` with
        the same ``batch_size`` (on the CPU): the same batches, spread over the workers."""
        from .inputs import to_items
        from .model import encode_order

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        docs = list(documents)
        if not docs:
            raise ValueError("encode_documents got no documents.")
        order = encode_order(to_items(docs))
        batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
        refs = [
            self.workers[n % len(self.workers)].encode.remote([docs[i] for i in idx], max_length)
            for n, idx in enumerate(batches)
        ]
        out: torch.Tensor | None = None
        for idx, ref in zip(batches, refs, strict=True):
            vectors = torch.from_numpy(np.array(self._ray.get(ref)))  # a writable copy
            if out is None:
                out = torch.empty((len(docs), *vectors.shape[1:]), dtype=output_dtype)
            out[torch.tensor(idx)] = vectors.to(output_dtype)
        assert out is not None
        return out

    def close(self) -> None:
        """Stop the workers (the Ray session stays up)."""
        for w in self.workers:
            self._ray.kill(w)
        self.workers = []


def index_paths_with_ray(
    paths: Sequence[str | os.PathLike[str]],
    folder: str | os.PathLike[str],
    model: str | None = None,
    *,
    address: str | None = None,
    num_workers: int | None = None,
    batch_size: int = 32,
    storage: dict[str, Any] | None = None,
    progress: bool = True,
    **add_options: Any,
) -> Any:
    """Index files into a collection (created if missing), encoding on a Ray cluster.

    Args:
        paths: files and folders (every format the collection reads: JSONL, text, PDF...).
        folder: the collection folder.
        model: the model name or folder (a new collection; default: the default model).
        address: the Ray cluster (``None``: a local one).
        num_workers: Ray workers (see :class:`RayEncoder`).
        batch_size: encoding batch size per worker call.
        storage: keep the index in Qdrant
            (:func:`~metaembed_rag.collection.storage.qdrant_storage`).
        progress: progress bars.
        add_options: more :meth:`~metaembed_rag.collection.Collection.add_paths` options.

    Returns:
        the :class:`~metaembed_rag.collection.IngestReport`.
    """
    from .collection import Collection
    from .collection.folder import CONFIG_FILE
    from .model import DEFAULT_MODEL

    root = Path(folder).expanduser()
    if (root / CONFIG_FILE).is_file():
        col = Collection.open(root, model=model, storage=storage)
    else:
        col = Collection.create(root, model, storage=storage)
    ref = col.config.get("model") or model or DEFAULT_MODEL
    encoder = RayEncoder(str(ref), address=address, num_workers=num_workers)
    try:
        col.encoder = encoder
        return col.add_paths(paths, batch_size=batch_size, progress=progress, **add_options)
    finally:
        encoder.close()
        col.close()
