"""Conversation support of the demo: the earlier turns a request carries, and the two prompts
that use them with an LLM (the page keeps the history; the server stays stateless).

With an LLM, a follow-up ("How far away is it?") is first rewritten by the LLM into a
standalone question from the conversation ("How far away is the Moon?"), which is what is
searched (as LlamaIndex's condense-question chat engine does); the answer prompt then holds
the conversation so far, the sources and the question. The extractive path answers each turn
on its own (it has no language model to resolve "it").
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CONDENSE_SYSTEM",
    "HistoryError",
    "MAX_TURNS",
    "MAX_TURN_CHARS",
    "check_history",
    "condense_prompt",
    "format_history",
]

#: Earlier turns used (the most recent ones).
MAX_TURNS = 6
#: Characters of each earlier question / answer kept in the prompts.
MAX_TURN_CHARS = 1200

CONDENSE_SYSTEM = (
    "Rewrite the user's last question as one standalone question that can be understood "
    "without the conversation (resolve pronouns and references from it). Keep its language "
    "and meaning. Reply with the question only."
)


class HistoryError(ValueError):
    """A malformed ``history`` in a request (the message says what is expected)."""


def check_history(raw: Any) -> list[dict[str, str]]:
    """The ``history`` of an ``/api/ask`` body, checked: ``None`` or a list of
    ``{"query": str, "answer": str | None}``, oldest first -> the last :data:`MAX_TURNS`
    turns, each text cut at :data:`MAX_TURN_CHARS`.

    Raises:
        HistoryError: not a list of such objects.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise HistoryError('\'history\' must be a list of {"query", "answer"} turns or null.')
    turns = []
    for n, turn in enumerate(raw):
        if not isinstance(turn, dict) or not isinstance(turn.get("query"), str):
            raise HistoryError(f"'history'[{n}] must be an object with a string 'query'.")
        answer = turn.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise HistoryError(f"'history'[{n}]['answer'] must be a string or null.")
        turns.append(
            {"query": turn["query"][:MAX_TURN_CHARS], "answer": (answer or "")[:MAX_TURN_CHARS]}
        )
    return turns[-MAX_TURNS:]


def format_history(history: list[dict[str, str]]) -> str:
    """The turns as ``User: ...`` / ``Assistant: ...`` lines (empty string for none)."""
    lines = []
    for turn in history:
        lines.append(f"User: {turn['query']}")
        if turn["answer"]:
            lines.append(f"Assistant: {turn['answer']}")
    return "\n".join(lines)


def condense_prompt(history: list[dict[str, str]], question: str) -> str:
    """The user prompt asking for a standalone version of ``question``."""
    return f"Conversation:\n{format_history(history)}\n\nLast question: {question}\nStandalone question:"
