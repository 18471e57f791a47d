"""Small pure validators for decoded JSON: each reads one field and returns it checked, or raises
`InvalidSpec` naming the field by its dotted path (`optimizer.lr`, `model.config.hidden`).

Shared by `protocol.spec`, `protocol.models` and `protocol.data`, so a rule such as "a bool is not
an integer" or "NaN is out of range" is written once. Never `assert`: the error is the answer the
caller sends back.
"""

import math
from collections.abc import Collection
from typing import Any

from protocol.errors import InvalidSpec


def join_field(path: str, name: str) -> str:
    """`path.name`, or `name` at the top level (path "")."""
    return f"{path}.{name}" if path else name


def get_object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidSpec("must be a JSON object", field)
    return value


def validate_keys(
    obj: dict[str, Any],
    path: str,
    *,
    required: Collection[str] = (),
    optional: Collection[str] = (),
) -> None:
    """Unknown keys first (a typo is likelier than an omission), then missing ones; the first
    offender in sorted order is named, so the answer is deterministic."""
    unknown = set(obj) - set(required) - set(optional)
    if unknown:
        raise InvalidSpec("unknown field", join_field(path, sorted(unknown)[0]))
    missing = set(required) - set(obj)
    if missing:
        raise InvalidSpec("missing required field", join_field(path, sorted(missing)[0]))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def get_int(
    obj: dict[str, Any], key: str, path: str, *, low: int, high: int, default: int | None = None
) -> int:
    """obj[key] (or `default` when absent) as an integer in [low, high]."""
    value = obj.get(key, default)
    if not _is_int(value) or not low <= value <= high:
        raise InvalidSpec(f"must be an integer between {low} and {high}", join_field(path, key))
    return value


def get_float(
    obj: dict[str, Any], key: str, path: str, *, low: float, high: float, default: float
) -> float:
    """obj[key] as a number in [low, high]; the range check also refuses NaN."""
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidSpec(f"must be a number between {low} and {high}", join_field(path, key))
    return float(value)


def get_probability(obj: dict[str, Any], key: str, path: str, *, default: float) -> float:
    """obj[key] as a number in [0, 1): a dropout rate of 1 would drop everything."""
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise InvalidSpec("must be a number in [0, 1)", join_field(path, key))
    return float(value)


def get_choice(
    obj: dict[str, Any], key: str, path: str, *, choices: tuple, default: Any = None
) -> Any:
    value = obj.get(key, default)
    if value not in choices:
        raise InvalidSpec(f"must be one of {', '.join(map(str, choices))}", join_field(path, key))
    return value


def get_bool(obj: dict[str, Any], key: str, path: str, *, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise InvalidSpec("must be true or false", join_field(path, key))
    return value


def get_int_list(
    obj: dict[str, Any],
    key: str,
    path: str,
    *,
    low: int,
    high: int,
    max_items: int,
    default: list[int],
) -> list[int]:
    """obj[key] as a list of 1 to `max_items` integers, each in [low, high]."""
    value = obj.get(key, default)
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= max_items
        or not all(_is_int(v) and low <= v <= high for v in value)
    ):
        raise InvalidSpec(
            f"must be a list of 1 to {max_items} integers in {low}..{high}", join_field(path, key)
        )
    return value


def _is_finite_scalar(value: Any, max_string: int) -> bool:
    if isinstance(value, str):
        return len(value) <= max_string
    if isinstance(value, float):
        return math.isfinite(value)  # Python's json reads NaN and Infinity
    return isinstance(value, int)  # bools included


def validate_json_tree(
    value: Any, field: str, *, max_depth: int, max_values: int, max_string: int
) -> None:
    """`value` holds only finite numbers, strings, bools, lists and string-keyed objects, nested
    at most `max_depth` deep, `max_values` values in all. Iterative, so a tree nested thousands
    deep is refused rather than overflowing the stack."""
    pending = [(value, field, 0)]
    count = 0
    while pending:
        node, where, depth = pending.pop()
        if isinstance(node, dict | list):
            count += len(node)
            if count > max_values:
                raise InvalidSpec(f"holds more than {max_values} values", field)
            if depth >= max_depth:
                raise InvalidSpec(f"nested more than {max_depth} deep", where)
            pending.extend(_children(node, where, depth + 1))
        elif not _is_finite_scalar(node, max_string):
            raise InvalidSpec(
                f"must be a finite number, a string of at most {max_string} characters, "
                "true/false, or a list or object of those",
                where,
            )


def _children(node: dict | list, where: str, depth: int) -> list[tuple[Any, str, int]]:
    if isinstance(node, list):
        return [(v, f"{where}[{i}]", depth) for i, v in enumerate(node)]
    if not all(isinstance(k, str) for k in node):
        raise InvalidSpec("object keys must be strings", where)
    return [(v, join_field(where, k), depth) for k, v in node.items()]


def is_hex(text: str) -> bool:
    """True iff `text` parses as hex bytes (as `bytes.fromhex` reads it)."""
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
