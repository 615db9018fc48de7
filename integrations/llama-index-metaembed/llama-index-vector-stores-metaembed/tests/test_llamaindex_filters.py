"""MetadataFilters: the translation to the core syntax and the list operators in the store."""

from __future__ import annotations

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.vector_stores.metaembed import MetaEmbedVectorStore, to_core_filter
from llama_index.vector_stores.metaembed.filters import element_index

from metaembed_rag.index.filters import compile_filter


def _f(key: str, value, op: FilterOperator = FilterOperator.EQ, **kw) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)], **kw)


def test_filter_translation_matches_llamaindex_semantics() -> None:
    f = MetadataFilters(
        filters=[
            MetadataFilter(key="year", value=2015, operator=FilterOperator.GTE),
            MetadataFilters(
                filters=[
                    MetadataFilter(key="lang", value="en"),
                    MetadataFilter(key="lang", value=["de", "fr"], operator=FilterOperator.IN),
                ],
                condition=FilterCondition.OR,
            ),
        ]
    )
    pred = compile_filter(to_core_filter(f))
    assert pred({"year": 2016, "lang": "de"}) and not pred({"year": 2014, "lang": "en"})
    assert not pred({"year": 2020, "lang": "it"}) and not pred({"lang": "en"})
    empty = compile_filter(to_core_filter(_f("tag", None, FilterOperator.IS_EMPTY)))
    assert empty({}) and empty({"tag": ""}) and empty({"tag": []}) and not empty({"tag": "x"})
    nin = compile_filter(to_core_filter(_f("a", [1, 2], FilterOperator.NIN)))
    assert nin({"a": 3}) and not nin({"a": 1})
    negated = _f("a", 1, condition=FilterCondition.NOT)
    assert compile_filter(to_core_filter(negated))({"a": 2})
    assert to_core_filter(None) is None and to_core_filter(MetadataFilters(filters=[])) is None


def test_list_operators_use_the_element_index() -> None:
    meta = {"tags": ["news", "sport", 3], "title": "x"}
    indexed = {**meta, "_li_elements": element_index(meta)}
    contains = compile_filter(
        to_core_filter(_f("tags", "sport", FilterOperator.CONTAINS), elements=True)
    )
    assert contains(indexed) and not contains({**indexed, "_li_elements": {}})
    assert compile_filter(to_core_filter(_f("tags", 3.0, FilterOperator.CONTAINS), elements=True))(
        indexed
    )
    any_ = to_core_filter(_f("tags", ["tech", "news"], FilterOperator.ANY), elements=True)
    all_ = to_core_filter(_f("tags", ["news", "tech"], FilterOperator.ALL), elements=True)
    assert compile_filter(any_)(indexed) and not compile_filter(all_)(indexed)
    none_of = to_core_filter(_f("tags", [], FilterOperator.ANY), elements=True)
    assert not compile_filter(none_of)(indexed)  # any([]) is False
    # a string field never "contains": list fields only
    assert not compile_filter(
        to_core_filter(_f("title", "x", FilterOperator.CONTAINS), elements=True)
    )(indexed)
    with pytest.raises(ValueError, match="list-element index that MetaEmbedVectorStore writes"):
        to_core_filter(_f("tags", "news", FilterOperator.CONTAINS))  # a plain core index


def test_unsupported_filters_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="store dates or versions as numbers"):
        to_core_filter(_f("date", "2024-01-01", FilterOperator.GT))
    with pytest.raises(ValueError, match="'text_match'.*not supported.*no substring search"):
        to_core_filter(_f("title", "cap", FilterOperator.TEXT_MATCH))
    with pytest.raises(ValueError, match="takes a list"):
        to_core_filter(_f("tags", "news", FilterOperator.ANY), elements=True)


def test_store_filters_on_list_metadata(embed) -> None:
    store = MetaEmbedVectorStore(embed, dtype="float32")
    rows = [
        ("Berlin hosts a football final.", ["sport", "europe"]),
        ("A new chip doubles battery life.", ["tech"]),
        ("Paris opens a tech museum.", ["tech", "europe"]),
    ]
    store.add(
        [TextNode(text=t, id_=f"n{i}", metadata={"tags": tags}) for i, (t, tags) in enumerate(rows)]
    )

    def ids(filters: MetadataFilters) -> list[str]:
        res = store.query(VectorStoreQuery(query_str="news", similarity_top_k=3, filters=filters))
        return sorted(res.ids or [])

    assert ids(_f("tags", "europe", FilterOperator.CONTAINS)) == ["n0", "n2"]
    assert ids(_f("tags", ["sport", "tech"], FilterOperator.ANY)) == ["n0", "n1", "n2"]
    assert ids(_f("tags", ["tech", "europe"], FilterOperator.ALL)) == ["n2"]
    assert [
        n.node_id for n in store.get_nodes(filters=_f("tags", "tech", FilterOperator.CONTAINS))
    ] == ["n1", "n2"]
    assert store.get_nodes(node_ids=["n1"])[0].metadata == {"tags": ["tech"]}  # index-only key
    store.delete_nodes(filters=_f("tags", "sport", FilterOperator.CONTAINS))
    assert [n.node_id for n in store.get_nodes()] == ["n1", "n2"]
    with pytest.raises(ValueError, match="not supported"):
        store.query(
            VectorStoreQuery(
                query_str="news",
                similarity_top_k=2,
                filters=_f("tags", "te", FilterOperator.TEXT_MATCH),
            )
        )
