"""YAML to plain Python values, remembering the line of every key and list item.

PyYAML's composer gives nodes with marks; walking them ourselves keeps those
lines, so every later error can name FILE:LINE.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import InputError

Path = tuple[Any, ...]

# A rule file is data an agent may take from the network: its shape is bounded, and YAML's
# anchors and aliases (the 'billion laughs': a dozen lines that expand to billions of values)
# are refused outright, as a rule file says each thing once (sets are for reuse).
MAX_DEPTH = 32
# A line longer than this is refused before YAML sees it: nothing in a rule file needs one,
# and a scalar of many megabytes would cost its whole length to parse only to be refused.
MAX_LINE = 1 << 20

# libyaml's parser when PyYAML was built with it (its wheels are): ten times faster.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
STR_TAG = "tag:yaml.org,2002:str"


_Loader: Any = _Base


def parse(text: str, filename: str) -> tuple[Any, dict[Path, int]]:
    """Returns (value, lines) where lines maps a path of keys and indexes to a 1-based line."""
    if len(text) > MAX_LINE:  # only then can a line be too long
        lengths = [len(line) for line in text.split("\n")]
        longest = max(lengths)
        if longest > MAX_LINE:
            raise InputError(f"{filename}:{lengths.index(longest) + 1}: a line of {longest:,} characters; "
                             f"a rule file's lines may have at most {MAX_LINE:,} (long lists of addresses "
                             "belong in a set file)")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise InputError(f"{filename}:{line}: YAML syntax: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a NUL, say)
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(f"{filename}:{line}: YAML: character {exc.character!r} is not allowed "
                         f"in a YAML file") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{filename}:1: YAML: {_one_line(exc)}") from None
    lines: dict[Path, int] = {}
    if node is None:
        return None, lines
    problems: list[str] = []
    value = _build(loader, node, (), lines, filename, problems, set())
    loader.dispose()
    if problems:
        raise InputError(problems)
    return value, lines


def _build(loader: Any, node: yaml.Node, path: Path, lines: dict[Path, int],
           filename: str, problems: list[str], seen: set[int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in seen:  # the composer hands an alias back as the anchored node itself
            problems.append(f"{filename}:{node.start_mark.line + 1}: YAML anchors and aliases are not "
                            "allowed in a rule file (name a set to reuse addresses or ports)")
            return None
        seen.add(id(node))
        if len(path) >= MAX_DEPTH:
            problems.append(f"{filename}:{node.start_mark.line + 1}: nested more than {MAX_DEPTH} deep")
            return None
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if key_node.tag == STR_TAG else _scalar(loader, key_node, filename, problems)
            line = key_node.start_mark.line + 1
            if key.__class__ is not str and (not isinstance(key, int) or isinstance(key, bool)):
                problems.append(f"{filename}:{line}: a key must be a name, not {key!r}")
                continue
            if key in out:
                problems.append(f"{filename}:{line}: duplicate key '{key}'")
                continue
            key_path = path + (key,)
            lines[key_path] = line  # the key's line, not its value's
            if value_node.tag == STR_TAG and value_node.__class__ is yaml.ScalarNode:
                out[key] = value_node.value  # most values of a rule file: no call for them
            else:
                out[key] = _build(loader, value_node, key_path, lines, filename, problems, seen)
                lines[key_path] = line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, path + (i,), lines, filename, problems, seen)
            for i, item in enumerate(node.value)
        ]
    return _scalar(loader, node, filename, problems)


def _scalar(loader: Any, node: yaml.Node, filename: str, problems: list[str]) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        problems.append(f"{filename}:{node.start_mark.line + 1}: expected a plain value here")
        return None
    if node.tag == STR_TAG:  # most of a rule file: the value is the text (what construct_object returns)
        return node.value
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        problems.append(f"{filename}:{node.start_mark.line + 1}: {_one_line(exc)}")
        return None


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's message without the position lines it appends (FILE:LINE says where)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        return str(exc.problem or exc.context or "invalid value")
    return str(exc).splitlines()[0] if str(exc) else "invalid YAML"
