"""The OData ``$filter`` engine both emulators share: one tokenizer, one parser, one evaluator.

Each emulator keeps only its dialect (``Dialect``): the tokens and literals it accepts, the
functions and lambdas it allows, and the wording and type of its errors. What a filter means —
``eq ne gt ge lt le``, ``and or not``, parentheses, ordering against null never true — is the
same in Partner Center and Dataverse, so it is written once here.
"""

from sandbox.odata.dialect import Dialect
from sandbox.odata.evaluate import Comparable, Getter, compare, evaluate, lookup
from sandbox.odata.parser import parse, tokenize
from sandbox.odata.syntax import (
    Call,
    Compare,
    Lambda,
    Literal,
    Logical,
    Node,
    Not,
    Operand,
    Prop,
    Token,
    properties,
)

__all__ = [
    "Call",
    "Comparable",
    "Compare",
    "Dialect",
    "Getter",
    "Lambda",
    "Literal",
    "Logical",
    "Node",
    "Not",
    "Operand",
    "Prop",
    "Token",
    "compare",
    "evaluate",
    "lookup",
    "parse",
    "properties",
    "tokenize",
]
