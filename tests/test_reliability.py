"""Reliability and security guarantees (docs/reliability.md lists each with its test here):
no code runs from saved data, tampered manifests are refused naming the field, one writer per
index folder, readers open a consistent generation and never write, interrupted creation
resumes, bad inputs give one-line errors or reported skips, and the demo server's checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _index_utils import D, K, make_index, unit

from metaembed_rag.index import (
    IndexCorruptedError,
    IndexLockedError,
    IndexStaleError,
    MultiVectorIndex,
)

# ---------------------------------------------------------------- 1. no code from data


def _model_with(tmp_path: Path, **changes) -> Path:
    """A copy of the packaged default model's folder with config fields changed."""
    from metaembed_rag.hub import BUILTIN_MODELS
    from metaembed_rag.model import DEFAULT_MODEL

    src = BUILTIN_MODELS[DEFAULT_MODEL]
    dest = tmp_path / "model"
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "metaembed_config.json").read_text())
    cfg.update(changes)
    (dest / "metaembed_config.json").write_text(json.dumps(cfg))
    return dest


def test_saved_package_backbone_must_be_allowed(tmp_path, monkeypatch):
    """A model folder naming ``package:this_module_would_run`` never imports it."""
    from metaembed_rag.hub import UntrustedModelError, resolve_backbone_path
    from metaembed_rag.model import MetaEmbedModel

    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name: imported.append(name))
    folder = _model_with(tmp_path, backbone="package:evil_module")
    with pytest.raises(UntrustedModelError, match="--allow-package evil_module"):
        MetaEmbedModel.from_pretrained(folder)
    assert imported == []
    # the caller's own argument, or an explicit allow, may import it
    with pytest.raises(ValueError, match="get_model_path"):
        resolve_backbone_path("package:evil_module", allow_packages=["evil_module"])
    assert imported == ["evil_module"]


def test_saved_trust_remote_code_is_ignored(tmp_path, monkeypatch, caplog):
    """``"trust_remote_code": true`` in a saved config does not reach transformers."""
    import metaembed_rag.model as model_mod

    seen = []

    def fake_load(path, remote, dtype):
        seen.append(remote)
        raise RuntimeError("stop here")

    monkeypatch.setattr(model_mod, "load_backbone", fake_load)
    folder = _model_with(tmp_path, trust_remote_code=True)
    with pytest.raises(RuntimeError, match="stop here"):
        model_mod.MetaEmbedModel.from_pretrained(folder)
    with pytest.raises(RuntimeError, match="stop here"):
        model_mod.MetaEmbedModel.from_pretrained(folder, trust_remote_code=True)
    assert seen == [False, True]
    assert "never turns it on" in caplog.text


def test_cli_allow_package_and_untrusted_one_line(tmp_path, capsys):
    from metaembed_rag.cli import main

    folder = _model_with(tmp_path, backbone="package:evil_module")
    assert main(["info", "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "evil_module" in err[0]


# ---------------------------------------------------------------- 2. tampered manifests


def _saved(tmp_path: Path, n: int = 6, dtype: str = "float32") -> Path:
    rng = np.random.default_rng(0)
    index = make_index(dtype=dtype, path=tmp_path / "idx")
    index.add([f"d{i}" for i in range(n)], unit(rng, n, K, D), [f"text {i}" for i in range(n)])
    index.save()
    index.close()
    return tmp_path / "idx"


def _tamper(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


TAMPERED = {
    "absolute vectors path": (
        lambda m: m["files"]["vectors"].update(name="/etc/passwd"),
        "files.vectors.name",
    ),
    "vectors path with ..": (
        lambda m: m["files"]["vectors"].update(name="../vectors-0123456789ab.bin"),
        "files.vectors.name",
    ),
    "docs named like vectors": (
        lambda m: m["files"]["docs"].update(name=m["files"]["vectors"]["name"]),
        "files.docs.name",
    ),
    "empty checksums": (
        lambda m: m["files"]["vectors"].update(sha256_blocks=[]),
        "files.vectors.sha256_blocks",
    ),
    "dim edited": (lambda m: m.update(dim=8), "files.vectors.row_shape"),
    "row count edited": (lambda m: m["counts"].update(rows=5), "counts"),
    "renamed key": (
        lambda m: m["coarse_index"].update(ef=m["coarse_index"].pop("ef_search")),
        "coarse_index.ef_search",
    ),
    "path option injected": (lambda m: m["options"].update(path="/tmp/elsewhere"), "options.path"),
    "bad dtype": (lambda m: m.update(dtype="float64"), "dtype"),
    "missing docs checksum": (lambda m: m["files"]["docs"].pop("sha256"), "files.docs.sha256"),
    "bytes edited": (lambda m: m["files"]["coarse"].update(bytes=4), "files.coarse.bytes"),
    "extra file kind": (lambda m: m["files"].update(scales=m["files"]["coarse"]), "files.scales"),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_manifest_refused_naming_field(tmp_path, case):
    edit, field = TAMPERED[case]
    folder = _saved(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    _tamper(folder, edit)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(IndexCorruptedError) as exc:
        MultiVectorIndex.load(folder)
    assert f"'{field}'" in str(exc.value)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    assert victim.read_text() == "untouched"


# ---------------------------------------------------------------- 3. writers and readers


def test_two_raw_writers_one_waits_then_is_told_stale(tmp_path):
    """Two ``MultiVectorIndex`` writers on one folder: the second cannot write while the first
    holds the lock, and after the first commits it is refused (its view is stale) instead of
    overwriting the first writer's rows."""
    rng = np.random.default_rng(1)
    folder = _saved(tmp_path)
    a = MultiVectorIndex.load(folder, lock_timeout=0.2)
    b = MultiVectorIndex.load(folder, lock_timeout=0.2)
    vec_a, vec_b = unit(rng, 20, K, D), unit(rng, 20, K, D)
    a.add([f"a{i}" for i in range(20)], vec_a)
    with pytest.raises(IndexLockedError, match=r"locked by pid \d+"):
        b.add([f"b{i}" for i in range(20)], vec_b)
    a.save()
    with pytest.raises(IndexStaleError, match="Load it again"):
        b.add([f"b{i}" for i in range(20)], vec_b)
    b.close()
    b = MultiVectorIndex.load(folder)
    b.add([f"b{i}" for i in range(20)], vec_b)
    b.save()
    final = MultiVectorIndex.load(folder, mmap=False)
    assert len(final) == 6 + 40
    for prefix, vec in (("a", vec_a), ("b", vec_b)):
        got = final.backend.fetch(final.backend.rows_of([f"{prefix}{i}" for i in range(20)]))
        np.testing.assert_allclose(got.numpy(), vec, atol=1e-6)


def test_reader_never_writes_into_the_folder(tmp_path):
    folder = _saved(tmp_path)
    (folder / ".lock").unlink(missing_ok=True)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    index = MultiVectorIndex.load(folder)
    index.search(np.asarray(unit(np.random.default_rng(2), 1, 4, D)), k=3)
    index.close()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_new_index_folder_is_locked_until_saved(tmp_path):
    index = make_index(path=tmp_path / "new")
    with pytest.raises(IndexLockedError):
        make_index(path=tmp_path / "new", lock_timeout=0.1)
    index.save()
    with pytest.raises(FileExistsError):
        make_index(path=tmp_path / "new", lock_timeout=0.1)
