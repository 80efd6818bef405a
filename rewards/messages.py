"""Text out of TRL's conversational format (docs/rewards.md, "The calling convention").

With conversational data TRL hands each completion as a message list,
``[{"role": "assistant", "content": "..."}]``; built-in rewards score the text
of those messages, and plain strings pass through unchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

from rewards.extract import as_text

__all__ = ["completion_texts", "is_messages", "message_text"]


def is_messages(value: Any) -> bool:
    """Is ``value`` a non-empty list of ``{"role": ..., "content": ...}`` messages?"""
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in value))


def _content_text(content: Any) -> str:
    """A message's content: a string, or a list of parts (``{"type": "text", "text": ...}``)."""
    if isinstance(content, (list, tuple)):
        return "".join(as_text(part.get("text")) if isinstance(part, dict) else as_text(part)
                       for part in content)
    return as_text(content)


def message_text(value: Any) -> str:
    """The text of a completion: its messages' contents joined by newlines, or the string itself.

    Only the assistant's messages count when there are any (a completion with tool
    turns); bytes decode leniently and ``None`` gives ``""`` (``rewards.extract.as_text``).
    """
    if not is_messages(value):
        return as_text(value)
    spoken = [m for m in value if m["role"] == "assistant"] or list(value)
    return "\n".join(_content_text(m["content"]) for m in spoken)


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """``message_text`` of each completion: what a built-in reward scores."""
    return [message_text(c) for c in completions]
