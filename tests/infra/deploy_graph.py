"""The deployment as a graph: every resource, `existing` reference, module and output of
infra/main.bicep and its modules, the `if` conditions each one is deployed under, and every
reference between them (parent, scope, dependsOn, a symbol or `${...}` in a property, a module's
outputs, `resourceId(...)`, an `existing` declaration resolved to what creates it).

Why it matters (https://learn.microsoft.com/azure/azure-resource-manager/bicep/conditional-resource-deployment):
"Conditional deployment doesn't cascade to child resources"; an explicit `dependsOn` on a
resource that is not deployed is dropped by Resource Manager, but "for implicit dependencies,
referencing a property of a conditional resource is allowed but may produce a deployment error".
A role assignment scoped to a secret that a condition left out is such an error, and it only
shows on the deployment that leaves it out (the first `azd up` on an empty subscription).

Conditions are compared as text, in the terms of main.bicep's parameters: a module's parameter is
replaced by the expression main.bicep passes, a variable by its value, so `enableAvailabilityTest`
inside alerts.bicep and in main.bicep are the same condition. A reference is covered when the
referring node's conditions (its modules', its own, and the `cond ? … : …` branches the reference
sits in) include every condition of the target. Syntactic, hence conservative: an equivalent
condition written differently is reported, to be written the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra.infra_model import parse, property_path

# What an `existing` declaration or a resourceId() may name without this deployment creating it.
# Key: (resource type lowercased, canonical name or None for any name) -> why it exists, and the
# conditions every use must carry (in main.bicep's terms).


@dataclass(frozen=True)
class Prerequisite:
    type: str
    name: str | None
    why: str
    needs: frozenset[str] = frozenset()

    def __str__(self) -> str:
        return f"prerequisite {self.type} {self.name or '*'} ({self.why})"


PREREQUISITES = (
    Prerequisite(
        "microsoft.authorization/roledefinitions",
        None,
        "built-in role definitions, the same in every tenant",
    ),
    Prerequisite(
        "microsoft.web/sites/functions",
        "'health'",
        "made by deploying the code (azd deploy), not by the Bicep: docs/deploy.md and "
        "docs/operate.md say to turn enableAvailabilityTest on once the code is deployed",
        frozenset({"enableAvailabilityTest"}),
    ),
)

RESOURCE_ID_FUNCTIONS = {
    "resource_id",
    "subscription_resource_id",
    "tenant_resource_id",
    "extension_resource_id",
}
_CHAIN = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")


@dataclass(frozen=True)
class NodeId:
    instance: str  # "main", or "main/<module symbol>" for a module's contents
    symbol: str  # the resource's, module's or existing's symbol; "output <name>" for an output

    def __str__(self) -> str:
        return f"{self.instance}:{self.symbol}"


@dataclass
class Instance:
    path: str
    file: Path
    tree: dict[str, Any]
    parent: Instance | None = None
    module: str | None = None  # the module's symbol in the parent
    conditions: frozenset[str] = frozenset()

    @property
    def passed(self) -> dict[str, Any]:
        assert self.parent is not None and self.module is not None
        return _body(self.parent.tree["modules"][self.module])["params"]

    def kind_of(self, name: str) -> str | None:
        for kind in ("resources", "modules", "parameters", "variables"):
            if name in self.tree.get(kind, {}):
                return kind
        return None


@dataclass
class Node:
    id: NodeId
    kind: str  # resource | existing | module | output
    type: str
    conditions: frozenset[str]
    decl: dict[str, Any]
    instance: Instance
    name: str = ""  # canonical name expression (resources)
    parent: NodeId | None = None


@dataclass(frozen=True)
class Edge:
    source: NodeId
    target: NodeId | Prerequisite | str  # str: an unresolved resourceId()/existing, described
    via: str  # parent | scope | dependsOn | property | param | output | condition
    guards: frozenset[str]  # conditions in force where the reference sits

    def __str__(self) -> str:
        return f"{self.source} --{self.via}--> {self.target}"


def _body(declaration: dict[str, Any]) -> dict[str, Any]:
    config = declaration["config"]
    while isinstance(config.get("config"), dict) and (
        "condition" in config or "loop_type" in config
    ):
        config = config["config"]
    return config


def _own_conditions(declaration: dict[str, Any]) -> list[Any]:
    found = []
    config = declaration["config"]
    while isinstance(config.get("config"), dict) and (
        "condition" in config or "loop_type" in config
    ):
        if config.get("condition") is not None:
            found.append(config["condition"])
        config = config["config"]
    return found


def _loop(declaration: dict[str, Any]) -> tuple[str, str] | None:
    config = declaration["config"]
    while isinstance(config.get("config"), dict) and (
        "condition" in config or "loop_type" in config
    ):
        if config.get("loop_type"):
            detail = config["loop_type"]["detail"]
            return detail["item_name"], detail["array_name"]
        config = config["config"]
    return None


@dataclass
class DeploymentGraph:
    nodes: dict[NodeId, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    instances: dict[str, Instance] = field(default_factory=dict)
    existing: dict[NodeId, NodeId | Prerequisite | str] = field(default_factory=dict)

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def build(cls, main: Path) -> DeploymentGraph:
        graph = cls()
        root = Instance("main", main, parse(main))
        graph._add_instance(root)
        for instance in list(graph.instances.values()):
            graph._add_nodes(instance)
        for node in list(graph.nodes.values()):
            if node.kind == "existing":
                graph._target_of(node.id)
        for node in list(graph.nodes.values()):
            graph._add_edges(node)
        return graph

    def _add_instance(self, instance: Instance) -> None:
        self.instances[instance.path] = instance
        for symbol, module in instance.tree.get("modules", {}).items():
            assert module["type"] == "local", f"{instance.file.name}: module {symbol} is not local"
            file = (instance.file.parent / module["detail"]["path"]).resolve()
            child = Instance(f"{instance.path}/{symbol}", file, parse(file), instance, symbol)
            child.conditions = instance.conditions | {
                self.canon(instance, c) for c in _own_conditions(module)
            }
            self._add_instance(child)

    def _add_nodes(self, instance: Instance) -> None:
        for symbol, resource in instance.tree.get("resources", {}).items():
            node = Node(
                NodeId(instance.path, symbol),
                "existing" if resource.get("existing") else "resource",
                resource["type"],
                instance.conditions | {self.canon(instance, c) for c in _own_conditions(resource)},
                resource,
                instance,
            )
            self.nodes[node.id] = node
        for symbol, module in instance.tree.get("modules", {}).items():
            node_id = NodeId(instance.path, symbol)
            self.nodes[node_id] = Node(
                node_id,
                "module",
                "module",
                self.instances[f"{instance.path}/{symbol}"].conditions,
                module,
                instance,
            )
        for name, output in instance.tree.get("outputs", {}).items():
            node_id = NodeId(instance.path, f"output {name}")
            self.nodes[node_id] = Node(
                node_id, "output", "output", instance.conditions, output, instance
            )
        for node in self.nodes.values():
            if node.instance is instance and node.kind in ("resource", "existing"):
                body = _body(node.decl)
                node.name = self.canon(instance, body.get("name"))
                if "__" in node.id.symbol:  # pycep flattens nested children as parent__child
                    node.parent = NodeId(instance.path, node.id.symbol.rsplit("__", 1)[0])
                elif isinstance(body.get("parent"), str):
                    node.parent = NodeId(instance.path, body["parent"])

    def _target_of(self, node_id: NodeId) -> NodeId | Prerequisite | str:
        """A node, or what an `existing` node stands for."""
        node = self.nodes[node_id]
        if node.kind != "existing":
            return node_id
        if node_id not in self.existing:
            self.existing[node_id] = f"{node_id} is being resolved (a cycle)"
            self.existing[node_id] = self._resolve_existing(node)
        return self.existing[node_id]

    def _key(self, node: Node) -> tuple[str, str, NodeId | Prerequisite | str | None]:
        parent = self._target_of(node.parent) if node.parent else None
        return node.type.lower(), node.name, parent

    def _resolve_existing(self, node: Node) -> NodeId | Prerequisite | str:
        key = self._key(node)
        created = [
            n.id
            for n in self.nodes.values()
            if n.kind == "resource" and n.type.lower() == key[0] and self._key(n) == key
        ]
        if len(created) == 1:
            return created[0]
        for prerequisite in PREREQUISITES:
            if prerequisite.type == key[0] and prerequisite.name in (None, key[1]):
                return prerequisite
        return f"nothing creates {node.type} {node.name}" + (
            f" (found {len(created)})" if created else ""
        )

    def _add_edges(self, node: Node) -> None:
        instance, decl = node.instance, node.decl
        if node.kind == "output":
            self._refs(node, instance, decl["value"], node.conditions, "output")
            return
        for condition in _own_conditions(decl):
            self._refs(node, instance, condition, node.conditions, "condition")
        loop = _loop(decl)
        if loop:
            self._refs(node, instance, loop[1], node.conditions, "property")
        body = _body(decl)
        if node.kind == "existing":
            # Only what locates it: the `existing` itself is an alias of what it resolves to, and
            # a reference to it is checked as a reference to that.
            for key in ("parent", "scope", "name"):
                if key in body:
                    self._refs(node, instance, body[key], node.conditions, key)
            return
        if node.parent and "__" in node.id.symbol:
            self._edge(node, node.parent, "parent", node.conditions)
        for key, value in body.items():
            via = {"parent": "parent", "scope": "scope", "dependsOn": "dependsOn"}.get(
                key, "param" if node.kind == "module" else "property"
            )
            self._refs(
                node, instance, value, node.conditions, via, locals_={loop[0]} if loop else set()
            )

    def _edge(
        self, node: Node, target: NodeId | Prerequisite | str, via: str, guards: frozenset[str]
    ) -> None:
        if isinstance(target, NodeId):
            target = self._target_of(target)
        self.edges.append(Edge(node.id, target, via, guards))

    # --- expressions ------------------------------------------------------------------------

    def _refs(
        self,
        node: Node,
        instance: Instance,
        expr: Any,
        guards: frozenset[str],
        via: str,
        locals_: set[str] | None = None,
        seen: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        locals_ = locals_ or set()

        def again(
            e: Any,
            g: frozenset[str] = guards,
            inst: Instance = instance,
            s: frozenset[tuple[str, str]] = seen,
        ) -> None:
            self._refs(node, inst, e, g, via, locals_ if inst is instance else set(), s)

        if isinstance(expr, list):
            for item in expr:
                again(item)
        elif isinstance(expr, str):
            if _CHAIN.match(expr) and expr.split(".")[0] not in locals_:
                self._chain_refs(node, instance, expr.split("."), guards, via, seen)
            else:
                for inner in _INTERPOLATION.findall(expr):
                    if _CHAIN.match(inner.strip()):
                        again(inner.strip())
        elif isinstance(expr, dict) and set(expr) == {"operator"}:
            operator = expr["operator"]
            operands = operator.get("operands") or {}
            if operator["type"] == "property_accessor":
                try:
                    path = property_path(expr)
                except AssertionError:
                    path = None
                if path and path[0] not in locals_:
                    self._chain_refs(node, instance, path, guards, via, seen)
                    return
                for value in operands.values():
                    again(value)
            elif operator["type"] == "conditional":
                condition = self.canon(instance, operands["condition"])
                again(operands["condition"])
                again(operands["true_value"], guards | {condition})
                again(operands["false_value"], guards | {f"not({condition})"})
            else:
                for value in operands.values():
                    again(value)
        elif isinstance(expr, dict) and set(expr) == {"function"}:
            function = expr["function"]
            parameters = function.get("parameters") or {}
            if function["type"] in RESOURCE_ID_FUNCTIONS:
                self._edge(node, self._resource_id(instance, parameters), "resourceId", guards)
            for value in parameters.values():
                again(value)
        elif isinstance(expr, dict) and "loop_type" in expr:
            detail = expr["loop_type"]["detail"]
            again(detail["array_name"])
            self._refs(
                node,
                instance,
                expr.get("config"),
                guards,
                via,
                locals_ | {detail["item_name"]},
                seen,
            )
        elif isinstance(expr, dict):
            for key, value in expr.items():
                # A key is a property name; only a quoted key's ${...} is an expression.
                for inner in _INTERPOLATION.findall(str(key)):
                    if _CHAIN.match(inner.strip()):
                        again(inner.strip())
                again(value)

    def _chain_refs(
        self,
        node: Node,
        instance: Instance,
        path: list[str],
        guards: frozenset[str],
        via: str,
        seen: frozenset[tuple[str, str]],
    ) -> None:
        base, rest = path[0], path[1:]
        kind = instance.kind_of(base)
        if (instance.path, base) in seen:
            return
        seen = seen | {(instance.path, base)}
        if kind == "resources":
            self._edge(node, NodeId(instance.path, base), via, guards)
        elif kind == "modules":
            self._edge(node, NodeId(instance.path, base), via, guards)
            if len(rest) >= 2 and rest[0] == "outputs":
                child = self.instances[f"{instance.path}/{base}"]
                output = child.tree["outputs"][rest[1]]["value"]
                self._refs(node, child, output, guards, via, set(), seen)
        elif kind == "variables":
            value = instance.tree["variables"][base]["value"]
            while rest and isinstance(value, dict) and rest[0] in value:
                value, rest = value[rest[0]], rest[1:]  # names.keyVault: that entry only
            self._refs(node, instance, value, guards, via, set(), seen)
        # parameters: a module's parameters are the module node's references (its `params`)

    def _resource_id(
        self, instance: Instance, parameters: dict[str, Any]
    ) -> NodeId | Prerequisite | str:
        resource_type = self.canon(instance, parameters.get("resource_type")).strip("'").lower()
        names = [
            v for k, v in parameters.items() if k.startswith("resource_name") and v is not None
        ]
        name = self.canon(instance, names[-1]) if names else ""
        created = [
            n.id
            for n in self.nodes.values()
            if n.kind == "resource" and n.type.lower() == resource_type and n.name == name
        ]
        if len(created) == 1:
            return created[0]
        for prerequisite in PREREQUISITES:
            if prerequisite.type == resource_type and prerequisite.name in (None, name):
                return prerequisite
        return f"resourceId({resource_type}, {name}) names nothing created here"

    def canon(self, instance: Instance, expr: Any, depth: int = 0) -> str:
        """An expression as text in main.bicep's terms (parameters and variables substituted)."""
        assert depth < 50, "cyclic expression"

        def again(e: Any, inst: Instance = instance) -> str:
            return self.canon(inst, e, depth + 1)

        if expr is None:
            return "null"
        if isinstance(expr, bool):
            return "true" if expr else "false"
        if isinstance(expr, (int, float)):
            return str(expr)
        if isinstance(expr, list):
            return "[" + ", ".join(again(e) for e in expr) + "]"
        if isinstance(expr, str):
            if _CHAIN.match(expr):
                return self._canon_chain(instance, expr.split("."), depth)
            return (
                "'"
                + _INTERPOLATION.sub(
                    lambda m: "${" + self._canon_inner(instance, m.group(1), depth) + "}", expr
                )
                + "'"
            )
        if set(expr) == {"operator"}:
            operator = expr["operator"]
            operands = operator.get("operands") or {}
            if operator["type"] == "property_accessor":
                try:
                    return self._canon_chain(instance, property_path(expr), depth)
                except AssertionError:
                    pass
            return f"{operator['type']}(" + ", ".join(again(v) for v in operands.values()) + ")"
        if set(expr) == {"function"}:
            function = expr["function"]
            parameters = function.get("parameters") or {}
            return (
                f"{function['type']}("
                + ", ".join(again(v) for v in parameters.values() if v is not None)
                + ")"
            )
        return "{" + ", ".join(f"{k}: {again(v)}" for k, v in expr.items()) + "}"

    def _canon_inner(self, instance: Instance, inner: str, depth: int) -> str:
        inner = inner.strip()
        if not _CHAIN.match(inner):
            return inner
        text = self._canon_chain(instance, inner.split("."), depth)
        # A literal substituted into an interpolation reads as its text.
        return text[1:-1] if text.startswith("'") and text.endswith("'") else text

    def _canon_chain(self, instance: Instance, path: list[str], depth: int) -> str:
        base, rest = path[0], path[1:]
        kind = instance.kind_of(base)
        if kind == "parameters":
            if instance.parent is None:
                value = base  # a deployment parameter: its own name
                return ".".join([value, *rest])
            passed = instance.passed
            declared = instance.tree["parameters"][base]
            if base in passed:
                return self._canon_value(instance.parent, passed[base], rest, depth)
            if declared.get("default") is not None:
                return self._canon_value(instance, declared["default"], rest, depth)
            return ".".join([f"{instance.path}:{base}", *rest])
        if kind == "variables":
            return self._canon_value(
                instance, instance.tree["variables"][base]["value"], rest, depth
            )
        if kind == "modules" and len(rest) >= 2 and rest[0] == "outputs":
            child = self.instances[f"{instance.path}/{base}"]
            return self._canon_value(
                child, child.tree["outputs"][rest[1]]["value"], rest[2:], depth
            )
        if kind == "resources" and rest == ["name"]:
            return self.canon(
                instance, _body(instance.tree["resources"][base]).get("name"), depth + 1
            )
        if kind in ("resources", "modules"):
            return ".".join([f"<{instance.path}:{base}>", *rest])
        # Not a symbol: a literal that happens to look like a name, or a loop variable's field.
        return f"'{base}'" if not rest else ".".join(path)

    def _canon_value(self, instance: Instance, value: Any, rest: list[str], depth: int) -> str:
        """`value.rest…`, looking into object literals (a variable such as `names`)."""
        while rest and isinstance(value, dict) and rest[0] in value:
            value, rest = value[rest[0]], rest[1:]
        while rest and isinstance(value, str) and _CHAIN.match(value):
            # value is itself a reference: resolve the whole chain there
            return self._canon_chain(instance, [*value.split("."), *rest], depth + 1)
        text = self.canon(instance, value, depth + 1)
        return ".".join([text, *rest])

    # --- the checks -------------------------------------------------------------------------

    def uncovered(self) -> list[str]:
        """References that may point at something a condition left out of the deployment."""
        problems = []
        for edge in self.edges:
            if edge.via == "dependsOn":
                continue  # Resource Manager drops an explicit dependency on a skipped resource
            target = edge.target
            if isinstance(target, str):
                problems.append(f"{edge.source}: {target} (via {edge.via})")
                continue
            needs = (
                target.needs if isinstance(target, Prerequisite) else self.nodes[target].conditions
            )
            missing = needs - edge.guards
            if missing:
                problems.append(
                    f"{edge.source} refers to {target} (via {edge.via}) without its condition "
                    f"{sorted(missing)}; it holds {sorted(edge.guards) or 'none'}"
                )
        return problems

    def unresolved_existing(self) -> list[str]:
        return [
            f"{node}: {target}" for node, target in self.existing.items() if isinstance(target, str)
        ]

    def module_dependencies(self, instance: str = "main") -> dict[str, set[str]]:
        """Each node of ``instance`` -> the nodes of ``instance`` it needs first, transitively."""
        direct: dict[str, set[str]] = {}
        for edge in self.edges:
            # Only what this instance's own declarations reference (a module's params, scope,
            # dependsOn): a reference inside a module orders nothing at this level.
            if not isinstance(edge.target, NodeId) or edge.source.instance != instance:
                continue
            source, target = self._top(edge.source, instance), self._top(edge.target, instance)
            if source and target and source != target:
                direct.setdefault(source, set()).add(target)
        closure: dict[str, set[str]] = {}
        for start in direct:
            todo, reached = list(direct[start]), set()
            while todo:
                current = todo.pop()
                if current not in reached:
                    reached.add(current)
                    todo.extend(direct.get(current, ()))
            closure[start] = reached
        return closure

    def _top(self, node_id: NodeId, instance: str) -> str | None:
        """The symbol in ``instance`` that ``node_id`` is, or is inside of."""
        if node_id.instance == instance:
            return node_id.symbol
        prefix = instance + "/"
        if node_id.instance.startswith(prefix):
            return node_id.instance[len(prefix) :].split("/")[0]
        return None

    def existing_out_of_order(self) -> list[str]:
        """`existing` references to something another module creates, with nothing making the
        referring module wait for that one (its name given as a plain variable, say)."""
        order = self.module_dependencies()
        problems = []
        for node_id, target in self.existing.items():
            if not isinstance(target, NodeId):
                continue
            user, creator = self._top(node_id, "main"), self._top(target, "main")
            if user and creator and user != creator and creator not in order.get(user, set()):
                problems.append(f"{node_id} resolves to {target}, which {user} does not wait for")
        return problems
