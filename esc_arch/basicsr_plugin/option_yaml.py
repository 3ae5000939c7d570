"""Option files read as plain data: YAML's safe loader, key order kept, no Python objects.

BasicSR 1.4.2 reads option files with PyYAML's full ``Loader``, under which a value tagged
``!!python/object/apply:os.system`` runs a command while the file is read, and it turns
``--force_yml`` values that start with ``[`` into Python with ``eval``. Option files are
downloaded and shared, so every one is read here instead (:func:`read_option_file`; BasicSR's
own ``parse_options`` gets the same loader through :mod:`.compat`), and ``--force_yml``
values are YAML scalars or flow lists (:func:`parse_value`). A tag that would build a Python
object is refused with one line naming the file and the line.
"""

from __future__ import annotations

import os

import yaml

from .checks import OptionError

__all__ = ["OptionLoader", "parse_value", "read_option_file"]


class OptionLoader(yaml.SafeLoader):
    """YAML's safe loader (plain scalars, lists, mappings; mappings keep the file's key
    order). Tags outside YAML's standard ones raise ``ConstructorError``."""


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
    tag = _tag(problem)
    if tag is not None:
        return (
            f"{line}: the tag {tag} is not allowed (option files are read as plain YAML; "
            "no Python object is built from them)"
        )
    return f"{line}: not valid YAML: {problem}"


def read_option_file(path: str | os.PathLike) -> dict:
    """The mapping in the option file ``path``; ``OptionError`` (one line naming the file
    and line) for a missing file, invalid YAML, a Python tag or a top level that is not a
    mapping."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OptionError(f"option file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            opt = yaml.load(f, Loader=OptionLoader)
    except UnicodeDecodeError as error:
        raise OptionError(f"{path}: not a text file (byte {error.start} is not UTF-8)") from error
    except yaml.YAMLError as error:
        raise OptionError(_error_line(error, path)) from error
    if not isinstance(opt, dict):
        raise OptionError(f"{path}: not a BasicSR option file (top level is not a mapping)")
    return opt


def parse_value(text: str, *, where: str = "--force_yml") -> object:
    """A ``--force_yml`` value as BasicSR reads it (``~`` / ``none``: ``None``; ``true``;
    numbers; ``!!float 1e-3``; a flow list ``[1, 2]``; anything else a string), as YAML data:
    nothing is evaluated."""
    text = text.strip()
    if not text:
        return ""
    if text.lower() == "none":
        return None
    try:
        return yaml.load(text, Loader=OptionLoader)
    except yaml.YAMLError as error:
        raise OptionError(_error_line(error, where, lines=False)) from error
