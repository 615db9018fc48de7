import pytest

from metaembed_rag.budget import DEFAULT_BUDGETS, Budget, parse_budgets, resolve_budget
from metaembed_rag.config import MetaEmbedConfig


def test_parse_forms() -> None:
    assert Budget.parse("8,16") == Budget(8, 16)
    assert Budget.parse("(4, 8)") == Budget(4, 8)
    assert Budget.parse("2x4") == Budget(2, 4)
    assert Budget.parse((16, 64)) == Budget(16, 64)
    assert Budget.parse(Budget(1, 1)) == Budget(1, 1)
    r_q, r_c = Budget(2, 4)
    assert (r_q, r_c) == (2, 4)
    assert str(Budget(8, 16)) == "8,16"


@pytest.mark.parametrize("bad", ["8", "a,b", "1,2,3", ""])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="r_q,r_c"):
        Budget.parse(bad)


@pytest.mark.parametrize("r_q,r_c", [(0, 1), (1, 0), (-1, 4)])
def test_nonpositive(r_q: int, r_c: int) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        Budget(r_q, r_c)


def test_resolve_against_trained_groups() -> None:
    assert resolve_budget(None, DEFAULT_BUDGETS) == Budget(16, 64)
    assert resolve_budget("8,16", DEFAULT_BUDGETS) == Budget(8, 16)
    with pytest.raises(
        ValueError, match=r"Valid budgets: \(1,1\), \(2,4\), \(4,8\), \(8,16\), \(16,64\)"
    ):
        resolve_budget((3, 5), DEFAULT_BUDGETS)
    with pytest.raises(ValueError, match="exceeds"):
        resolve_budget((32, 64), DEFAULT_BUDGETS, strict=False)
    assert resolve_budget((3, 5), DEFAULT_BUDGETS, strict=False) == Budget(3, 5)


def test_parse_budgets_all() -> None:
    assert parse_budgets("all", DEFAULT_BUDGETS) == list(DEFAULT_BUDGETS)
    assert parse_budgets("1,1 8,16", DEFAULT_BUDGETS) == [Budget(1, 1), Budget(8, 16)]
    with pytest.raises(ValueError, match="Valid budgets"):
        parse_budgets("1,1 9,9", DEFAULT_BUDGETS)


def test_config_rejects_budget_beyond_tokens() -> None:
    with pytest.raises(ValueError, match="exceeds the Meta tokens"):
        MetaEmbedConfig(backbone="x", num_query_tokens=8, num_candidate_tokens=64)


def test_config_json_round_trip(tmp_path) -> None:
    cfg = MetaEmbedConfig(backbone="x", hidden_size=32, projection_dim=16)
    cfg.save(tmp_path)
    again = MetaEmbedConfig.load(tmp_path)
    assert again == cfg
    assert again.dim == 16
    (tmp_path / "metaembed_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        MetaEmbedConfig.load(tmp_path)
