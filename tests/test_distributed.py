"""Distributed encoding on a local 2-worker Ray cluster: the same vectors (bitwise, CPU) and the
same collection as one process, and a worker killed mid-run is restarted without loss.

``slow``: starting Ray and two workers takes about 100 s on the shared 2-core machine; run with
``pytest -m slow tests/test_distributed.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip(
    "ray", reason="distributed encoding needs the ray extra: pip install -e '.[ray]'"
)

from metaembed_rag import MetaEmbedModel  # noqa: E402
from metaembed_rag.collection import Collection  # noqa: E402
from metaembed_rag.distributed import RayEncoder, index_paths_with_ray  # noqa: E402
from metaembed_rag.index import MultiVectorIndex  # noqa: E402

pytestmark = pytest.mark.slow

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi"]  # fmt: skip


def _texts(n: int) -> list[str]:
    """Texts of varied lengths (so batches differ in padding)."""
    return [
        " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + (i * 7) % 25)) for i in range(n)
    ]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs (2 one-thread workers), shut down afterwards."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tiny_bert_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    model = MetaEmbedModel.from_backbone(tiny_bert_path)
    return str(model.save_pretrained(tmp_path_factory.mktemp("ray_model") / "tiny"))


def test_vectors_are_bitwise_those_of_one_process(cluster, model_dir: str, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # the workers' setting: the same kernels, the same sums
    texts = _texts(45)
    expected = MetaEmbedModel.from_pretrained(model_dir).encode_documents(texts, batch_size=8)
    encoder = RayEncoder(model_dir, num_workers=2)
    try:
        assert len(set(encoder.worker_pids())) == 2
        assert torch.equal(encoder.encode_documents(texts, batch_size=8), expected)
    finally:
        encoder.close()

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with (corpus / "records.jsonl").open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"_id": f"r{i}", "text": t}) + "\n")
    (corpus / "note.txt").write_text(" ".join(texts[:5]), encoding="utf-8")
    single = tmp_path / "single"
    with Collection.create(single, model_dir) as col:
        col.add_paths([corpus], batch_size=8, progress=False)
    report = index_paths_with_ray([corpus], tmp_path / "ray", model_dir, num_workers=2,
                                  batch_size=8, progress=False)  # fmt: skip
    a = MultiVectorIndex.load(single / "index")
    b = MultiVectorIndex.load(tmp_path / "ray" / "index")
    assert report.chunks_added == len(a) > len(texts)  # long records are split into chunks
    assert sorted(a.ids) == sorted(b.ids)
    for doc_id in a.ids:
        ga, gb = a.get(doc_id), b.get(doc_id)
        assert torch.equal(ga["vectors"], gb["vectors"]), doc_id
        assert (ga["text"], ga["metadata"]) == (gb["text"], gb["metadata"])
    # re-running finds every file indexed: nothing encoded twice, nothing missing
    again = index_paths_with_ray([corpus], tmp_path / "ray", num_workers=2, progress=False)
    assert (again.chunks_added, again.files_unchanged) == (0, 2)


def test_a_killed_worker_is_restarted_and_its_batch_retried(
    cluster, model_dir: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    texts = _texts(12)
    expected = MetaEmbedModel.from_pretrained(model_dir).encode_documents(texts, batch_size=4)
    marker = tmp_path / "kill-one-worker"
    encoder = RayEncoder(model_dir, num_workers=2, _fail_marker=str(marker))
    try:
        before = encoder.worker_pids()
        marker.touch()  # the first worker to take a batch now exits (os._exit)
        got = encoder.encode_documents(texts, batch_size=4)
        assert not marker.exists()  # a worker did die ...
        after = encoder.worker_pids()
        assert len(set(before) - set(after)) == 1  # ... and was restarted (a new process)
        assert torch.equal(got, expected)  # its batch was retried: nothing lost
    finally:
        encoder.close()


def test_cli_index_ray(cluster, model_dir: str, tmp_path: Path, capsys) -> None:
    """`metaembed-rag index PATH --ray --ray-workers 2` (the module's Ray session is reused)
    builds the collection a plain `index` builds."""
    from metaembed_rag.cli import main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, t in enumerate(_texts(6)):
        (corpus / f"d{i}.txt").write_text(t, encoding="utf-8")
    for name, extra in (("plain", []), ("ray", ["--ray", "--ray-workers", "2"])):
        rc = main(["index", str(corpus), "--index", str(tmp_path / name), "--model", model_dir,
                   "--no-progress", *extra])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
    a = MultiVectorIndex.load(tmp_path / "plain" / "index")
    b = MultiVectorIndex.load(tmp_path / "ray" / "index")
    assert sorted(a.ids) == sorted(b.ids) and len(a) >= 6
    assert all(torch.equal(a.get(i)["vectors"], b.get(i)["vectors"]) for i in a.ids)


def test_ray_encoding_into_a_qdrant_collection(cluster, model_dir: str, tmp_path: Path) -> None:
    """The same run writing into Qdrant (local mode): every chunk stored with its text and the
    vectors of a single-process encoding (other batches than the per-file ones, so equal up to
    padding round-off, not bitwise)."""
    pytest.importorskip("qdrant_client", reason="needs the qdrant extra")
    from metaembed_rag.collection.storage import qdrant_storage

    torch.set_num_threads(1)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = _texts(10)
    for i, t in enumerate(texts):
        (corpus / f"d{i}.txt").write_text(t, encoding="utf-8")
    storage = qdrant_storage(str(tmp_path / "qdrant"), "docs")
    report = index_paths_with_ray([corpus], tmp_path / "col", model_dir, num_workers=2,
                                  batch_size=4, storage=storage, progress=False)  # fmt: skip
    with Collection.open(tmp_path / "col", model=model_dir) as col:
        assert len(col) == report.chunks_added >= len(texts)
        ids = col.index.ids
        got = {i: col.index.get(i) for i in ids}
        expected = col.model.encode_documents([got[i]["text"] for i in ids], batch_size=4)
    for n, i in enumerate(ids):
        torch.testing.assert_close(got[i]["vectors"], expected[n], rtol=0, atol=1e-5)
