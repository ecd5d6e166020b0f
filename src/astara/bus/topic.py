"""AMQP topic-exchange matching: does a routing key match a binding pattern?

Owned here so the embedded bus routes exactly as RabbitMQ would, and a
subscriber moved from one transport to the other sees the same messages.

Rules (RabbitMQ's topic exchange):

- keys and patterns are words separated by ``.``; the empty string is zero
  words, and empty words (``a..b``) are words like any other;
- ``*`` in a pattern matches exactly one word, ``#`` zero or more words;
- any other pattern word matches the identical key word, case-sensitively;
- ``*`` and ``#`` in a *routing key* are ordinary characters.

A ``Binding`` is compiled once per subscription; ``matches`` is linear in
pattern words times key words and allocates nothing per call beyond a set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_ONE = "*"
_ANY = "#"


def split_words(key: str) -> tuple[str, ...]:
    """The words of a routing key or pattern: ``""`` has none, ``"a.b"`` two."""
    return tuple(key.split(".")) if key else ()


@dataclass(frozen=True, slots=True)
class Binding:
    """A compiled binding pattern. Equal patterns compare equal."""

    pattern: str
    _words: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _literal: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = split_words(self.pattern)
        object.__setattr__(self, "_words", words)
        object.__setattr__(self, "_literal", not any(w in (_ONE, _ANY) for w in words))

    def matches(self, routing_key: str) -> bool:
        """Whether a message published with ``routing_key`` is delivered to this binding."""
        if self._literal:
            return routing_key == self.pattern
        return _match(self._words, split_words(routing_key))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    # `reachable` holds every position in `words` that the pattern words seen
    # so far can end at; the key matches when the last position is reachable.
    reachable = {0}
    end = len(words)
    for p in pattern:
        if p == _ANY:
            reachable = set(range(min(reachable), end + 1))
        else:
            reachable = {i + 1 for i in reachable if i < end and (p == _ONE or words[i] == p)}
        if not reachable:
            return False
    return end in reachable
