"""Where a collection's index lives: its folder's ``index/`` (default) or a Qdrant collection.

``collection.json`` records a Qdrant store as ``"storage": {"kind": "qdrant", "location":
URL_OR_PATH, "collection": NAME}``; the folder then keeps only the collection config and the
file manifest (``files.json``), and every write goes to Qdrant (see ``docs/scale-out.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..index import MultiVectorIndex
from .folder import INDEX_DIR, CollectionError

__all__ = ["open_index", "qdrant_storage"]


def qdrant_storage(location: str, collection: str) -> dict[str, str]:
    """The ``storage`` entry of a Qdrant collection (a local-mode folder made absolute)."""
    if not location or not collection:
        raise CollectionError("--qdrant and --collection go together: pass both.")
    if not location.startswith(("http://", "https://")) and location != ":memory:":
        location = str(Path(location).expanduser().resolve())
    return {"kind": "qdrant", "location": location, "collection": collection}


def open_index(
    root: Path, config: dict[str, Any], model: Any = None, *, create: bool = False
) -> MultiVectorIndex:
    """The collection's index: the saved one in ``root/index``, or the Qdrant collection
    ``config["storage"]`` names (``create``: a new one for ``model``, refused if it already
    holds documents)."""
    storage = config.get("storage")
    if storage is None:
        return MultiVectorIndex.load(root / INDEX_DIR, model=model)
    if storage.get("kind") != "qdrant":
        raise CollectionError(f"{root}: unknown index storage {storage!r} in the config.")
    from ..index.qdrant import qdrant_client_for, qdrant_index

    client = qdrant_client_for(storage["location"])
    name = storage["collection"]
    if create and client.collection_exists(name) and client.count(name).count:
        client.close()
        raise CollectionError(
            f"Qdrant collection {name!r} at {storage['location']} already holds documents; "
            "choose a new --collection name (or open the collection folder that indexed it)."
        )
    if not create and not client.collection_exists(name):
        client.close()
        raise CollectionError(
            f"{root} keeps its index in Qdrant collection {name!r} at {storage['location']}, "
            "which does not exist there: check --qdrant / the server, or re-index."
        )
    return qdrant_index(client, name, model)
