"""``$filter`` text → a tree (``syntax``), by recursive descent; precedence ``or`` < ``and`` <
``not`` < comparison, as OData's (docs.oasis-open.org, odata-v4.01 part 2, 5.1.1.1)."""

from __future__ import annotations

from sandbox.odata.dialect import Dialect
from sandbox.odata.syntax import Call, Compare, Lambda, Logical, Node, Not, Operand, Prop, Token

COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})


def tokenize(text: str, dialect: Dialect) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = dialect.tokens.match(text, pos)
        if match is None or match.end() == pos:
            raise dialect.fail("unreadable", pos=pos, text=text, snippet=text[pos : pos + 20])
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group(kind)))
        pos = match.end()
    return tokens


def parse(text: str, dialect: Dialect) -> Node:
    """The tree of ``text``, or the dialect's error."""
    return _Parser(text, dialect).parse()


class _LambdaStart:
    """``collection/any`` read as an operand; the parser reads the lambda that follows."""

    def __init__(self, collection: Prop) -> None:
        self.collection = collection


class _Parser:
    def __init__(self, text: str, dialect: Dialect) -> None:
        self.text = text
        self.dialect = dialect
        self.tokens = tokenize(text, dialect)
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise self.dialect.fail("ends", text=self.text)
        self.pos += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.text == text

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise self.dialect.fail("expected", expected=text, found=token.text, text=self.text)

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "name" and self.dialect.word(token) == word:
            self.pos += 1
            return True
        return False

    def parse(self) -> Node:
        node = self.or_expr()
        token = self.peek()
        if token is not None:
            raise self.dialect.fail("trailing", found=token.text, text=self.text)
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.keyword("or"):
            node = Logical("or", node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.unary()
        while self.keyword("and"):
            node = Logical("and", node, self.unary())
        return node

    def unary(self) -> Node:
        if self.keyword("not"):
            return Not(self.unary())
        if self.at("("):
            self.take()
            node = self.or_expr()
            self.expect(")")
            return node
        token = self.peek()
        if token is not None and token.kind == "name":
            name = self.dialect.word(token)
            if name in self.dialect.functions:
                self.take()
                return self.call(name)
        return self.comparison()

    def call(self, name: str) -> Call:
        self.expect("(")
        args = [self.operand_only()]
        while self.at(","):
            self.take()
            args.append(self.operand_only())
        self.expect(")")
        return Call(name, tuple(args))

    def comparison(self) -> Node:
        left = self.operand()
        if isinstance(left, _LambdaStart):
            return self.lambda_any(left.collection)
        token = self.take()
        op = self.dialect.word(token)
        if token.kind != "name" or op not in COMPARISONS:
            raise self.dialect.fail("operator", found=token.text)
        return Compare(op, left, self.operand_only())

    def operand_only(self) -> Operand:
        operand = self.operand()
        if isinstance(operand, _LambdaStart):
            raise self.dialect.fail("lambda_compared")
        return operand

    def operand(self) -> Operand | _LambdaStart:
        token = self.take()
        literal = self.dialect.literal(token)
        if literal is not None:
            return literal
        if token.kind != "name":
            raise self.dialect.fail("operand", found=token.text)
        parts = [token.text]
        while self.at("/"):
            self.take()
            segment = self.take()
            if segment.kind != "name":
                raise self.dialect.fail("path_segment", found=segment.text)
            if self.dialect.lambdas and segment.text.lower() == "any" and self.at("("):
                return _LambdaStart(Prop("/".join(parts)))
            parts.append(segment.text)
        return Prop("/".join(parts))

    def lambda_any(self, collection: Prop) -> Lambda:
        self.expect("(")
        variable = self.take()
        if variable.kind != "name":
            raise self.dialect.fail("lambda_variable")
        self.expect(":")
        body = self.or_expr()
        self.expect(")")
        return Lambda(collection, variable.text, body)
