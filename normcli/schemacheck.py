"""A quick check that a JSON document conforms to a JSON Schema, for the stats file's schema.

``conforms`` answers "yes" or "cannot tell": it knows the keywords the stats file's schema uses
(``type``, ``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``,
``const``, ``minimum``, ``maximum``, ``minItems``, ``maxItems``, ``minProperties``,
``pattern`` and local ``$ref``), and says no at anything else or at any doubt. A "no" sends the
document to the ``jsonschema`` library, which has the last word and words the error; a "yes"
spares every load of a valid file importing it (60-90 ms of start-up).
"""
from __future__ import annotations

import re
from typing import Any

_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description"})


def conforms(instance: Any, schema: dict[str, Any]) -> bool:
    """True only if ``instance`` is valid against ``schema`` (a draft 2020-12 JSON Schema)."""
    return _Checker(schema).valid(instance, schema)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Types tested strictly: an integral float (1.0) is an "integer" to JSON Schema, and gets a
# "no" here, which the full validator then settles.
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _same(a: Any, b: Any) -> bool:
    """JSON equality for the scalars an ``enum`` or ``const`` lists (true is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if _is_number(a) and _is_number(b):
        return a == b
    return isinstance(a, str) and isinstance(b, str) and a == b


class _Checker:
    def __init__(self, root: dict[str, Any]):
        self._root = root

    def valid(self, value: Any, schema: Any) -> bool:
        if schema is True:
            return True
        if not isinstance(schema, dict):
            return False
        for key, arg in schema.items():
            check = _KEYWORDS.get(key)
            if check is None:
                if key in _ANNOTATIONS or (key == "$defs" and schema is self._root):
                    continue
                return False  # a keyword this check does not know
            if not check(self, value, arg, schema):
                return False
        return True

    def ref(self, value: Any, arg: Any, schema: dict) -> bool:
        if not (isinstance(arg, str) and arg.startswith("#/$defs/")):
            return False
        target = self._root.get("$defs", {}).get(arg[len("#/$defs/"):])
        return target is not None and self.valid(value, target)

    def type(self, value: Any, arg: Any, schema: dict) -> bool:
        names = arg if isinstance(arg, list) else [arg]
        return any(name in _TYPES and _TYPES[name](value) for name in names)

    def properties(self, value: Any, arg: Any, schema: dict) -> bool:
        if not isinstance(value, dict):
            return True
        return all(self.valid(value[k], sub) for k, sub in arg.items() if k in value)

    def additional(self, value: Any, arg: Any, schema: dict) -> bool:
        if not isinstance(value, dict):
            return True
        named = schema.get("properties", {})
        extra = [v for k, v in value.items() if k not in named]
        return not extra if arg is False else all(self.valid(v, arg) for v in extra)

    def required(self, value: Any, arg: Any, schema: dict) -> bool:
        return not isinstance(value, dict) or all(k in value for k in arg)

    def items(self, value: Any, arg: Any, schema: dict) -> bool:
        return not isinstance(value, list) or all(self.valid(v, arg) for v in value)

    def enum(self, value: Any, arg: Any, schema: dict) -> bool:
        return any(_same(value, option) for option in arg)

    def const(self, value: Any, arg: Any, schema: dict) -> bool:
        return _same(value, arg)

    def minimum(self, value: Any, arg: Any, schema: dict) -> bool:
        return not _is_number(value) or value >= arg

    def maximum(self, value: Any, arg: Any, schema: dict) -> bool:
        return not _is_number(value) or value <= arg

    def min_items(self, value: Any, arg: Any, schema: dict) -> bool:
        return not isinstance(value, list) or len(value) >= arg

    def max_items(self, value: Any, arg: Any, schema: dict) -> bool:
        return not isinstance(value, list) or len(value) <= arg

    def min_properties(self, value: Any, arg: Any, schema: dict) -> bool:
        return not isinstance(value, dict) or len(value) >= arg

    def pattern(self, value: Any, arg: Any, schema: dict) -> bool:
        return not isinstance(value, str) or re.search(arg, value) is not None


_KEYWORDS = {
    "$ref": _Checker.ref,
    "type": _Checker.type,
    "properties": _Checker.properties,
    "additionalProperties": _Checker.additional,
    "required": _Checker.required,
    "items": _Checker.items,
    "enum": _Checker.enum,
    "const": _Checker.const,
    "minimum": _Checker.minimum,
    "maximum": _Checker.maximum,
    "minItems": _Checker.min_items,
    "maxItems": _Checker.max_items,
    "minProperties": _Checker.min_properties,
    "pattern": _Checker.pattern,
}
