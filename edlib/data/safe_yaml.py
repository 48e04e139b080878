"""YAML from users' files, loaded so that no file can exhaust memory or surprise with numbers.

`yaml.safe_load` runs no code, but it still expands aliases: a 358-byte file of nested
anchors (`b: &b [*a, *a, ...]`, ten levels) is a few hundred bytes to parse and billions of
values to print or walk, which is how one local.yaml made `edlib scan` print 624 MB. `load`
counts the values a document holds with every alias expanded (without expanding anything)
and refuses documents above `MAX_VALUES`, recursive ones, and ones nested too deeply.

It also reads numbers as people write them: YAML 1.1 (PyYAML's dialect) reads `0_5` as 5
(digit separators), `010` as 8 (octal) and `1:30` as 90 (base 60). Such scalars stay text
here, so a setting written `0_5` is an error naming the file, not a silent 5.

Errors are `yaml.YAMLError`s, so callers report them as invalid YAML with the file's name.
"""

from __future__ import annotations

import re

import yaml

# Values (scalars, lists, mappings) a document may hold with its aliases expanded: settings
# files and sidecars hold tens; a long tag list a few thousand.
MAX_VALUES = 100_000

_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")


class YamlRefused(yaml.YAMLError):
    """A YAML document refused before it is built (too many values, recursive, too deep)."""


class _Loader(yaml.SafeLoader):
    def compose_document(self):
        node = super().compose_document()
        _check_expanded_size(node)
        return node

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        return super().construct_yaml_int(node) if _PLAIN_INT.fullmatch(text) else text

    def construct_yaml_float(self, node):
        text = self.construct_scalar(node)
        return super().construct_yaml_float(node) if _PLAIN_FLOAT.fullmatch(text) else text


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def load(text: str):
    """The Python value of one YAML document (as `yaml.safe_load`), bounded as the module
    docstring says. Raises `yaml.YAMLError`."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:
        raise YamlRefused("nested too deeply; refused") from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expanded_size(root: yaml.Node | None) -> None:
    """Raise `YamlRefused` when the document under `root`, aliases expanded, holds more
    than MAX_VALUES values or refers to itself. Each node is counted once (memoised),
    so this takes time linear in the file, however large the expansion."""
    if root is None:
        return
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in _children(node))
            if size[key] > MAX_VALUES:
                raise YamlRefused(
                    f"holds more than {MAX_VALUES:,} values once its aliases (*name) are expanded "
                    "(a YAML alias bomb?); refused"
                )
            continue
        if key in size:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise YamlRefused("an alias (*name) refers to a value that contains it; recursive YAML is refused")
            if id(child) not in size:
                stack.append((child, False))
