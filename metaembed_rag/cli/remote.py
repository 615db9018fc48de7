"""``metaembed-rag search --server URL``: search through a running ``metaembed-rag serve``, whose
model is already loaded (no model load in the command; standard library HTTP only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SERVER",
    "SERVER_ENV",
    "RemoteResult",
    "ServerError",
    "detect_server",
    "server_info",
    "server_search",
]

#: Environment variable naming the server when ``--server`` is not given.
SERVER_ENV = "METAEMBED_RAG_SERVER"
#: Seconds to wait for the server (a search on a busy CPU can take a few seconds).
TIMEOUT_S = 120.0
#: Where ``metaembed-rag serve`` listens by default: ``search`` looks there for a server of the
#: same index.
DEFAULT_SERVER = "http://127.0.0.1:8000"
#: Seconds the look-up waits (a refused connection answers at once).
DETECT_TIMEOUT_S = 2.0


class ServerError(OSError):
    """The server cannot be reached or refused the request (the message says which and why)."""


@dataclass
class RemoteResult:
    """One hit as the server returns it (the fields of a local ``SearchResult``)."""

    id: str
    rank: int
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    image: Path | None = None

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> RemoteResult:
        return cls(
            id=str(row["id"]), rank=int(row["rank"]), score=float(row["score"]),
            text=row.get("text") or "", metadata=dict(row.get("metadata") or {}),
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """As ``SearchResult.to_dict`` (``image`` is always ``None``: the server serves images
        by URL)."""
        return {"id": self.id, "score": self.score, "rank": self.rank, "text": self.text,
                "metadata": self.metadata, "image": None}  # fmt: skip


def _base(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def _request(
    url: str, path: str, body: dict[str, Any] | None = None, timeout: float = TIMEOUT_S
) -> dict[str, Any]:
    """GET (``body`` None) or POST JSON to ``url + path``; the decoded JSON answer.

    Raises:
        ServerError: nothing answers at ``url``, or it answered with an error (its detail).
    """
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(_base(url) + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read().decode("utf-8")).get("detail", exc.reason)
        except (ValueError, AttributeError):
            detail = exc.reason
        raise ServerError(f"the server at {_base(url)} answered {exc.code}: {detail}") from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(
            f"no metaembed-rag server answers at {_base(url)} ({reason}); start one with "
            "`metaembed-rag serve` or search without --server."
        ) from exc
    except ValueError as exc:
        raise ServerError(
            f"{_base(url)}{path} did not answer JSON: is it a metaembed-rag server?"
        ) from exc


def server_info(url: str, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """The server's ``/api/info`` (model, budgets, collection summary)."""
    return _request(url, "/api/info", timeout=timeout)


def served_folder(info: dict[str, Any]) -> Path:
    """The index folder a server's ``/api/info`` says it serves (resolved)."""
    return Path(str((info.get("collection") or {}).get("folder", ""))).expanduser().resolve()


def detect_server(index: str | Path, url: str | None = None) -> str | None:
    """``url`` (default :data:`DEFAULT_SERVER`) if a metaembed-rag server answers there within
    :data:`DETECT_TIMEOUT_S` and serves the index folder ``index``; else None."""
    url = url or DEFAULT_SERVER
    try:
        info = server_info(url, timeout=DETECT_TIMEOUT_S)
    except (ServerError, OSError, ValueError):
        return None
    if not isinstance(info, dict) or served_folder(info) != Path(index).expanduser().resolve():
        return None
    return url


def server_search(
    url: str, query: str, *, k: int, budget: str | None
) -> tuple[list[RemoteResult], str, float]:
    """``query`` through the server's ``/api/search``: (results, budget used, server-side
    search milliseconds)."""
    body: dict[str, Any] = {"query": query, "k": k}
    if budget:
        body["budget"] = budget
    out = _request(url, "/api/search", body)
    results = [RemoteResult.from_json(r) for r in out.get("results", [])]
    return results, str(out["budget"]), float(out.get("latency_ms", 0.0))
