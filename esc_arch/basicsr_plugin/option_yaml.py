"""Option files read as plain data: YAML's safe loader, key order kept, no Python objects,
within :data:`esc_arch.limits.OPTION_FILE_LIMITS`.

BasicSR 1.4.2 reads option files with PyYAML's full ``Loader``, under which a value tagged
``!!python/object/apply:os.system`` runs a command while the file is read, and it turns
``--force_yml`` values that start with ``[`` into Python with ``eval``. Option files are
downloaded and shared, so every one is read here instead (:func:`read_option_file`; BasicSR's
own ``parse_options`` gets the same loader through :mod:`.compat`), and ``--force_yml``
values are YAML scalars or flow lists (:func:`parse_value`). A tag that would build a Python
object is refused with one line naming the file and the line.

:class:`OptionLoader` bounds what a file may make its readers build, while it composes the
file and without expanding an alias: the file's bytes (before parsing), the nesting of its
mappings and lists, and its node count with every alias counted at its expanded size (what
BasicSR's printing and deep copies would build; each anchored node's size is taken once, when
it is complete). An alias inside the mapping or list it names (``&x {a: *x}``), a key that is
not a string and a key given twice in one mapping are refused too, each with the line.
"""

from __future__ import annotations

import os

import yaml
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode

from ..limits import OPTION_FILE_LIMITS
from .checks import OptionError

__all__ = ["OptionFileError", "OptionLoader", "parse_value", "read_option_file"]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class OptionFileError(yaml.MarkedYAMLError):
    """An option file beyond :data:`OPTION_FILE_LIMITS`, or with a self-referencing alias, a
    key that is not a string or a key given twice (``problem``: the one-line reason)."""

    def __init__(self, problem: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def _too_large(size: int) -> str:
    limit = OPTION_FILE_LIMITS["bytes"]
    return f"{size:,} bytes is too large for an option file (at most {limit:,}; published ones are under 10 KB)"


def _stream_size(stream) -> int | None:
    """The size in bytes of what the loader is given: text, bytes or an open file."""
    if isinstance(stream, str):
        return len(stream.encode("utf-8", "surrogatepass"))
    if isinstance(stream, bytes):
        return len(stream)
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


class OptionLoader(yaml.SafeLoader):
    """YAML's safe loader (plain scalars, lists, mappings; mappings keep the file's key
    order) within :data:`OPTION_FILE_LIMITS`. Tags outside YAML's standard ones raise
    ``ConstructorError``; the limits, self-referencing aliases and keys that are not strings
    or are given twice raise :class:`OptionFileError`."""

    def __init__(self, stream) -> None:
        size = _stream_size(stream)
        if size is not None and size > OPTION_FILE_LIMITS["bytes"]:
            raise OptionFileError(_too_large(size))
        super().__init__(stream)
        self._nodes = 0  # nodes composed so far, each alias counted at its target's expanded size
        self._depth = 0  # mappings and lists open around the current node
        self._expanded: dict[int, int] = {}  # id(anchored node) -> its expanded node count

    def _count(self, nodes: int, mark: yaml.Mark) -> None:
        self._nodes += nodes
        limit = OPTION_FILE_LIMITS["nodes"]
        if self._nodes > limit:
            raise OptionFileError(
                f"more than {limit:,} values once its aliases are expanded (an alias bomb?); "
                "the published option files hold about 500",
                mark,
            )

    def compose_node(self, parent: Node | None, index) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            if node.end_mark is None:  # a mapping or list still being composed: the alias is inside it
                raise OptionFileError(
                    f"the alias *{event.anchor} is inside the mapping or list it names (a self-reference)",
                    event.start_mark,
                )
            self._count(self._expanded[id(node)], event.start_mark)
            return node
        collection = isinstance(event, MappingStartEvent | SequenceStartEvent)
        if collection:
            self._depth += 1
            if self._depth > OPTION_FILE_LIMITS["depth"]:
                raise OptionFileError(
                    f"nested deeper than {OPTION_FILE_LIMITS['depth']} mappings and lists "
                    "(the published option files nest 4 deep)",
                    event.start_mark,
                )
        start = self._nodes
        self._count(1, event.start_mark)
        anchor = event.anchor
        node = super().compose_node(parent, index)
        if collection:
            self._depth -= 1
        if anchor is not None:
            self._expanded[id(node)] = self._nodes - start
        return node

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[str, int] = {}
        for key, _ in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, ScalarNode) and key.tag == _MERGE_TAG:
                continue
            if not (isinstance(key, ScalarNode) and key.tag == _STR_TAG):
                shown = repr(key.value) if isinstance(key, ScalarNode) else f"a {key.id}"
                raise OptionFileError(
                    f"the key {shown} is not a string (option keys are names; quote it if it is one)", key.start_mark
                )
            if key.value in first:
                raise OptionFileError(
                    f"the key {key.value!r} is given twice in one mapping (lines {first[key.value]} and {line}); "
                    "keep one",
                    key.start_mark,
                )
            first[key.value] = line
        return node


def _tag(problem: str) -> str | None:
    """The tag named by a safe loader's "could not determine a constructor" problem, in the
    ``!!`` form a file spells it."""
    if "could not determine a constructor for the tag" not in problem:
        return None
    tag = problem.rsplit(" ", 1)[-1].strip("'\"")
    return tag.replace("tag:yaml.org,2002:", "!!")


def _error_line(error: yaml.YAMLError, where: str, *, lines: bool = True) -> str:
    """One line for a YAML error: where (the file and, with ``lines``, the line), then what."""
    mark = getattr(error, "problem_mark", None)
    line = f"{where}, line {mark.line + 1}" if mark is not None and lines else where
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    if isinstance(error, OptionFileError):
        return f"{line}: {problem}"
    tag = _tag(problem)
    if tag is not None:
        return (
            f"{line}: the tag {tag} is not allowed (option files are read as plain YAML; "
            "no Python object is built from them)"
        )
    return f"{line}: not valid YAML: {problem}"


def read_option_file(path: str | os.PathLike) -> dict:
    """The mapping in the option file ``path``; ``OptionError`` (one line naming the file
    and line) for a missing or unreadable file, one beyond :data:`OPTION_FILE_LIMITS`,
    invalid YAML, a Python tag or a top level that is not a mapping."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OptionError(f"option file {path!r} does not exist")
    limit = OPTION_FILE_LIMITS["bytes"]
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise OptionError(f"{path}: {_too_large(size)}")
            data = f.read(limit + 1)
    except OSError as error:
        raise OptionError(f"{path}: cannot be read ({error.strerror or error})") from error
    if len(data) > limit:  # grew while being read
        raise OptionError(f"{path}: {_too_large(len(data))}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise OptionError(f"{path}: not a text file (byte {error.start} is not UTF-8)") from error
    try:
        opt = yaml.load(text, Loader=OptionLoader)
    except yaml.YAMLError as error:
        raise OptionError(_error_line(error, path)) from error
    if not isinstance(opt, dict):
        raise OptionError(f"{path}: not a BasicSR option file (top level is not a mapping)")
    return opt


def parse_value(text: str, *, where: str = "--force_yml") -> object:
    """A ``--force_yml`` value as BasicSR reads it (``~`` / ``none``: ``None``; ``true``;
    numbers; ``!!float 1e-3``; a flow list ``[1, 2]``; anything else a string), as YAML data
    within :data:`OPTION_FILE_LIMITS`: nothing is evaluated."""
    text = text.strip()
    if not text:
        return ""
    if text.lower() == "none":
        return None
    try:
        return yaml.load(text, Loader=OptionLoader)
    except yaml.YAMLError as error:
        raise OptionError(_error_line(error, where, lines=False)) from error
