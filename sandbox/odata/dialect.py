"""What one service's ``$filter`` accepts and how it words a refusal."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sandbox.odata.syntax import Literal, Token

# The refusals the parser can make, each a key of ``Dialect.messages`` (a ``str.format``
# template). ``unreadable`` gets pos, text and snippet; ``ends`` gets text; ``expected`` gets
# expected, found and text; ``trailing`` gets found and text; the others get found, or nothing.
MESSAGE_KEYS = frozenset(
    {
        "unreadable",  # no token matches here
        "ends",  # the text ends inside an expression
        "expected",  # a required ( ) , or : is missing
        "trailing",  # a complete expression is followed by more
        "operator",  # not a comparison operator where one must be
        "operand",  # neither a property nor a literal
        "path_segment",  # not a name after "/"
        "lambda_variable",  # any( not followed by a name
        "lambda_compared",  # any(...) on the right of a comparison
    }
)


@dataclass(frozen=True)
class Dialect:
    """``tokens`` is a pattern of named groups: ``ws`` is skipped, ``name`` is a property name or
    a keyword, ``punct`` is one of ``( ) , : /``; a token's text is its group's (whitespace the
    pattern matches before the group is not part of it). ``literal`` is the value a token spells,
    or None when it is a property name; it may refuse a token with ``error``. ``functions`` are
    the function names allowed before ``(``; ``lambdas`` allows ``path/any(x: ...)``;
    ``ignore_case`` reads keywords, operators and function names without regard to case."""

    tokens: re.Pattern[str]
    literal: Callable[[Token], Literal | None]
    error: Callable[[str], Exception]
    messages: Mapping[str, str]
    functions: frozenset[str] = frozenset()
    lambdas: bool = False
    ignore_case: bool = False

    def __post_init__(self) -> None:
        missing = MESSAGE_KEYS - set(self.messages)
        if missing:
            raise ValueError(f"the dialect has no message for {', '.join(sorted(missing))}")

    def fail(self, key: str, **fields: object) -> Exception:
        return self.error(self.messages[key].format(**fields))

    def word(self, token: Token) -> str:
        return token.text.lower() if self.ignore_case else token.text
