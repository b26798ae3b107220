"""Load an environment from YAML (one file or a directory of them) and report every problem at once.

Problems come out compiler-style, `file:line:column: message`, with positions taken from ruamel.yaml's
round-trip nodes. Whatever the bytes, the result is an Environment or InvalidEnvironment: never a
traceback. Anchors and aliases are refused outright, so no file can expand into a huge document.
"""

from __future__ import annotations

import datetime
import difflib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from svcctl.errors import InvalidEnvironment, Problem, SvcctlError
from svcctl.model.checks import check_environment
from svcctl.model.compose import compose_all
from svcctl.model.names import NAME_RULE
from svcctl.model.paths import ManifestPathError, manifest_path
from svcctl.model.spec import App, Binding, Environment, Instance, Location, Service, ServicePlan
from svcctl.model.spec import Node as NodeSpec
from svcctl.model.types import check_environment_name, text_problem

ENTRY_SECTIONS: dict[str, type[BaseModel]] = {
    "nodes": NodeSpec,
    "services": Service,
    "plans": ServicePlan,
    "instances": Instance,
    "apps": App,
}
NAME_KEY = "environment"
SECTIONS = (NAME_KEY, *ENTRY_SECTIONS, "bindings")
KIND = {"nodes": "node", "services": "service", "plans": "plan", "instances": "instance", "apps": "app"}
PATH_FIELDS = {"nodes": ("identity_file", "ssh_config", "known_hosts")}  # apps.manifest: _resolve_manifest

_CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)
_SUFFIXES = (".yaml", ".yml")

Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class _Pos:
    """Where a key and its value sit in one file (1-based)."""

    file: str
    key: tuple[int, int]
    value: tuple[int, int]

    def at_key(self) -> Location:
        return Location(self.file, *self.key)

    def at_value(self) -> Location:
        return Location(self.file, *self.value)


def display_path(path: Path) -> str:
    """The path as shown in messages: relative to the current directory when inside it."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def yaml_files(path: Path) -> list[Path]:
    """The files an environment path stands for: the file itself, or a directory's *.yaml/*.yml, sorted."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
        if not files:
            raise SvcctlError(f"{display_path(path)}: no *.yaml or *.yml files in this directory.")
        return files
    if path.is_file():
        return [path]
    raise SvcctlError(f"{display_path(path)}: no such file or directory.")


def load_environment(path: Path) -> Environment:
    """Load, validate and cross-check the environment at `path`; InvalidEnvironment lists every problem."""
    loader = _Loader()
    for file in yaml_files(path):
        loader.add_file(file)
    return loader.finish(_suggested_name(path))


def _suggested_name(path: Path) -> str:
    """The name to suggest for an environment that declares none: its directory's, if that is a valid name."""
    absolute = path.absolute()
    directory = absolute if absolute.is_dir() else absolute.parent
    try:
        return check_environment_name(directory.resolve().name)
    except ValueError:
        return "NAME"


class _Loader:
    """Merges files into one plain document, remembering where every key and value came from."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.data: dict[str, Any] = {section: {} for section in ENTRY_SECTIONS}
        self.data["bindings"] = []
        self.pos: dict[Path_, _Pos] = {}
        self.bindings_seen: dict[tuple[str, str], Location] = {}
        self.first_file = "."
        self.files: set[Path] = set()
        self.manifests: list[tuple[Path_, _Pos, str, Path]] = []  # (app, where, as declared, resolved)
        self.unread = False  # a file could not be read or parsed: it may hold what seems missing

    def problem(self, where: Location, message: str) -> None:
        self.problems.append(Problem(where.file, where.line, where.column, message))

    # -- reading one file -------------------------------------------------------------------------------

    def add_file(self, file: Path) -> None:
        self.files.add(file.absolute())
        shown = display_path(file)
        if not self.pos and not self.problems:
            self.first_file = shown
        text = self._read_text(file, shown)
        if text is None:
            self.unread = True
            return
        document = self._parse(text, shown)
        if document is None:
            self.unread = True
            return
        base = file.absolute().parent
        for key in document:
            where = _key_pos(document, key, shown)
            if key not in SECTIONS:
                self.problem(where.at_key(), _unknown("section", key, "the top level", list(SECTIONS)))
                continue
            value = document[key]
            if key == NAME_KEY:
                self._add_name(value, where)
                continue
            if value is None:
                continue
            if key == "bindings":
                if not isinstance(value, CommentedSeq):
                    self.problem(
                        where.at_value(),
                        f'bindings must be a list, found {_kind_of(value)}; start each binding with "- "',
                    )
                    continue
                self._add_bindings(value, shown)
            else:
                if not isinstance(value, CommentedMap):
                    self.problem(
                        where.at_value(),
                        f"{key} must be a mapping from names to entries, found {_kind_of(value)}",
                    )
                    continue
                self._add_entries(key, value, shown, base)

    def _add_name(self, value: Any, where: _Pos) -> None:
        """The environment's name: declared once, in any of its files; the model checks the value."""
        earlier = self.pos.get((NAME_KEY,))
        if earlier is not None:
            self.problem(
                where.at_key(),
                f"the environment's name is already declared at {earlier.at_key()}; an environment has one name, "
                "so keep only one of the two",
            )
            return
        self.pos[(NAME_KEY,)] = where
        if value is None:
            self.problem(where.at_key(), 'environment: give the environment\'s name, such as "environment: prod"')
            return
        self.data[NAME_KEY] = self._plain(value, (NAME_KEY,), where.file)

    def _read_text(self, file: Path, shown: str) -> str | None:
        try:
            raw = file.read_bytes()
        except OSError as exc:
            self.problem(Location(shown, 1, 1), f"cannot read the file: {exc.strerror or exc}")
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            self.problem(
                Location(shown, line, column),
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
            )
            return None
        text = text.removeprefix("\ufeff")
        tabs = False
        for number, line_text in enumerate(text.split("\n"), start=1):
            stripped = line_text.lstrip(" \t")
            indent = line_text[: len(line_text) - len(stripped)]
            if "\t" in indent and stripped.strip() and not stripped.startswith("#"):
                tabs = True
                self.problem(
                    Location(shown, number, indent.index("\t") + 1),
                    "tab character in indentation; YAML indents with spaces",
                )
        return None if tabs else text

    def _parse(self, text: str, shown: str) -> CommentedMap | None:
        """Compose and vet the node tree (anchors, tags, duplicate keys), then load it round-trip."""
        yaml = YAML(typ="rt")
        before = len(self.problems)
        try:
            documents = compose_all(text, yaml)
        except MarkedYAMLError as exc:
            self.problem(_mark_location(exc, shown), _yaml_message(exc))
            return None
        except ReaderError as exc:
            line, column = _offset_to_line_col(text, exc.position)
            self.problem(
                Location(shown, line, column),
                f"character {_codepoint(exc.character)} is not allowed in YAML; remove it",
            )
            return None
        except (YAMLError, RecursionError, ValueError, TypeError, IndexError, KeyError) as exc:
            self.problem(Location(shown, 1, 1), f"cannot parse YAML: {exc}")
            return None
        if not documents or (_is_null(documents[0]) and len(documents) == 1):
            self.problem(
                Location(shown, 1, 1),
                f"the file is empty; expected a mapping with some of: {', '.join(SECTIONS)}",
            )
            return None
        if len(documents) > 1:
            mark = documents[1].start_mark
            self.problem(
                Location(shown, mark.line + 1, mark.column + 1),
                "a second YAML document in one file; put it in a file of its own",
            )
        for problem_at, message in _vet(documents[0]):
            self.problem(Location(shown, *problem_at), message)
        if len(self.problems) > before:
            return None
        root = documents[0]
        if not isinstance(root, MappingNode):
            self.problem(
                Location(shown, root.start_mark.line + 1, root.start_mark.column + 1),
                f"the top level must be a mapping with some of: {', '.join(SECTIONS)}; found {_node_kind(root)}",
            )
            return None
        try:  # from the node tree already composed: the text is parsed once
            loaded = yaml.constructor.construct_document(root)
        except MarkedYAMLError as exc:
            self.problem(_mark_location(exc, shown), _yaml_message(exc))
            return None
        except (YAMLError, RecursionError, ValueError, TypeError, IndexError, KeyError) as exc:
            self.problem(Location(shown, 1, 1), f"cannot load YAML: {exc}")
            return None
        if not isinstance(loaded, CommentedMap):  # pragma: no cover - composed as a mapping above
            self.problem(Location(shown, 1, 1), "the top level must be a mapping")
            return None
        return loaded

    # -- merging ----------------------------------------------------------------------------------------

    def _add_entries(self, section: str, entries: CommentedMap, shown: str, base: Path) -> None:
        kind = KIND[section]
        for name in entries:
            where = _key_pos(entries, name, shown)
            if not isinstance(name, str):
                self.problem(where.at_key(), f"{kind} names must be strings, found {_kind_of(name)}; {NAME_RULE}")
                continue
            path = (section, name)
            earlier = self.pos.get(path)
            if earlier is not None:
                self.problem(where.at_key(), f'{kind} "{name}" is already declared at {earlier.at_key()}')
                continue
            self.pos[path] = where
            value = self._plain(entries[name], path, shown)
            if isinstance(value, dict):
                if section == "apps":
                    self._resolve_manifest(value, path, where, base)
                for field in PATH_FIELDS.get(section, ()):
                    # an unsafe path is left as written, so its problem is reported on what the user wrote
                    if isinstance(value.get(field), str) and value[field] and text_problem(value[field]) is None:
                        resolved = _resolve(value[field], base)
                        if resolved is None:
                            field_at = self.pos.get((*path, field), where)
                            home = value[field].split("/", 1)[0]
                            self.problem(
                                field_at.at_value(),
                                f'{section}.{name}.{field}: cannot expand "{home}" in "{value[field]}" (no such '
                                "user or home directory here); write the path out in full",
                            )
                        else:
                            value[field] = resolved
            self.data[section][name] = value

    def _resolve_manifest(self, app: dict[str, Any], path: Path_, where: _Pos, base: Path) -> None:
        """Resolve an app's manifest by the rule of svcctl.model.paths (apply uses it too), or report why not.

        An environment's files all sit in its directory (yaml_files does not recurse), so `base` is both
        the declaring file's directory and the environment's.
        """
        declared = app.get("manifest")
        if not isinstance(declared, str):
            return  # the schema reports a missing or non-string manifest
        at = self.pos.get((*path, "manifest"), where)
        try:
            resolved = manifest_path(base, base, declared)
        except ManifestPathError as exc:
            if exc.kind != "character":  # App.manifest's type (LocalPath) reports those, at the same place
                self.problem(at.at_value(), f"{path[0]}.{path[1]}.manifest: {exc}")
            return
        self.manifests.append((path, at, declared, resolved))
        app["manifest"] = str(resolved)

    def _add_bindings(self, items: CommentedSeq, shown: str) -> None:
        for index in range(len(items)):
            at = _item_pos(items, index, shown)
            merged_index = len(self.data["bindings"])
            path = ("bindings", merged_index)
            self.pos[path] = at
            value = self._plain(items[index], path, shown)
            self.data["bindings"].append(value)
            if isinstance(value, dict) and isinstance(value.get("app"), str):
                instance = value.get("instance")
                if isinstance(instance, str):
                    pair = (value["app"], instance)
                    earlier = self.bindings_seen.get(pair)
                    if earlier is not None:
                        self.problem(
                            at.at_key(),
                            f"binding of app {pair[0]} to instance {pair[1]} is already declared at {earlier}",
                        )
                    else:
                        self.bindings_seen[pair] = at.at_key()

    def _plain(self, value: Any, path: Path_, shown: str) -> Any:
        """Turn ruamel's round-trip objects into plain Python, recording each child's position."""
        if isinstance(value, CommentedMap):
            result: dict[Any, Any] = {}
            for key in value:
                self.pos[(*path, key)] = _key_pos(value, key, shown)
                result[_scalar(key)] = self._plain(value[key], (*path, key), shown)
            return result
        if isinstance(value, CommentedSeq):
            items = []
            for index in range(len(value)):
                self.pos[(*path, index)] = _item_pos(value, index, shown)
                items.append(self._plain(value[index], (*path, index), shown))
            return items
        return _scalar(value)

    # -- validation -------------------------------------------------------------------------------------

    def finish(self, suggested_name: str) -> Environment:
        if (NAME_KEY,) not in self.pos and not self.unread:
            self.problem(
                Location(self.first_file, 1, 1),
                f'the environment\'s name is not declared; add "environment: {suggested_name}" to {self.first_file} '
                "(hosts record the environment's objects under its name, and its key file is named after it)",
            )
        for path, at, declared, resolved in self.manifests:
            if resolved.absolute() in self.files:  # apply would write credentials into the environment's YAML
                self.problem(
                    at.at_value(),
                    f'{path[0]}.{path[1]}.manifest: "{declared}" is one of the environment\'s own files; '
                    "put the manifest elsewhere, such as apps/NAME/manifest.yml",
                )
        try:
            env = Environment.model_validate(self.data)
        except ValidationError as exc:
            for error in exc.errors():
                where, message = self._explain(error)
                self.problem(where, message)
            raise InvalidEnvironment(self.problems) from None
        if self.problems:  # cross-checks on a partly read environment would only add noise
            raise InvalidEnvironment(self.problems)
        env = env.located(self._addresses(env))
        problems = check_environment(env)
        if problems:
            raise InvalidEnvironment(problems)
        return env

    def _explain(self, error: Any) -> tuple[Location, str]:
        loc: tuple[Any, ...] = tuple(error["loc"])
        kind: str = error["type"]
        prefix = loc
        while prefix and prefix not in self.pos:
            prefix = prefix[:-1]
        pos = self.pos.get(prefix)
        if pos is None:
            where = Location(self.first_file, 1, 1)
        elif prefix == loc and (len(loc) > 2 or loc == (NAME_KEY,)) and kind != "extra_forbidden":
            where = pos.at_value()
        else:
            where = pos.at_key()
        dotted = _dotted(loc)
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            allowed = sorted(model.model_fields) if model is not None else []
            return where, _unknown("key", loc[-1], _dotted(loc[:-1]), allowed)
        if kind == "missing":
            return where, f'{_dotted(loc[:-1])}: missing required key "{loc[-1]}"'
        return where, f"{dotted}: {_rephrase(error, loc)}"

    def _addresses(self, env: Environment) -> dict[str, Location]:
        addresses: dict[str, Location] = {}
        for path, pos in self.pos.items():
            if path[0] == NAME_KEY:
                if path == (NAME_KEY,):
                    addresses[NAME_KEY] = pos.at_value()
                continue
            section, key, *rest = path
            if section == "bindings":
                binding = env.bindings[key]
                head = f"binding.{binding.app}.{binding.instance}"
            else:
                head = f"{KIND[section]}.{key}"
            if rest:
                addresses[".".join([head, *map(str, rest)])] = pos.at_value()
            else:
                addresses.setdefault(head, pos.at_key())
        return addresses


# -- helpers ----------------------------------------------------------------------------------------------


def _vet(root: Node) -> Iterator[tuple[tuple[int, int], str]]:
    """Refuse anchors, unknown tags, complex and duplicate keys, walking the composed tree once."""
    stack: list[Node] = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        at = (node.start_mark.line + 1, node.start_mark.column + 1)
        anchor = getattr(node, "anchor", None)
        if anchor is not None:
            name = getattr(anchor, "value", anchor)
            yield (
                at,
                (
                    f"anchor &{name} is not supported: write the value out "
                    "(anchors and aliases are refused so no file can expand into a huge document)"
                ),
            )
        tag = str(getattr(node.tag, "value", node.tag))
        if tag not in _CORE_TAGS:
            yield at, f"YAML tag {tag} is not supported; remove it"
        if isinstance(node, MappingNode):
            first: dict[str, tuple[int, int]] = {}
            for key_node, value_node in node.value:
                key_at = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if not isinstance(key_node, ScalarNode):
                    yield key_at, "only plain keys are supported, not lists or mappings as keys"
                    stack.append(key_node)
                else:
                    earlier = first.get(key_node.value)
                    if earlier is not None:
                        yield (
                            key_at,
                            (f'duplicate key "{key_node.value}" (first at line {earlier[0]}, column {earlier[1]})'),
                        )
                    else:
                        first[key_node.value] = key_at
                stack.append(value_node)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


def _rephrase(error: Any, loc: tuple[Any, ...]) -> str:
    """Pydantic's message for one error, reworded to say what the user should write instead."""
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    got = _got(value)
    field = str(loc[-1]) if loc else ""
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(loc)
        if model is None:
            return f"must be a mapping of names to strings, such as {{zone: a}}, got {got}"
        required = [name for name, spec in model.model_fields.items() if spec.is_required()]
        keys = f"required: {', '.join(required)}; " if required else ""
        return f"must be a mapping of keys ({keys}allowed: {', '.join(sorted(model.model_fields))}), got {got}"
    if kind == "list_type":
        scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
        hint = f"; write [{_show(value)}]" if scalar else ""
        return f"must be a list, got {got}{hint}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"must be one of {', '.join(allowed)}, got {got}"
        if isinstance(value, str):
            if value.lower().startswith("maria") and "mysql" in allowed:
                return message + ' (MariaDB is "mysql")'
            close = difflib.get_close_matches(value.lower(), allowed, n=1, cutoff=0.6)
            if close:
                message += f' (did you mean "{close[0]}"?)'
        return message
    if kind in ("int_parsing", "int_type", "int_from_float"):
        if field.endswith("_mb"):
            return f"must be a whole number of MiB without a unit (4 GiB is 4096), got {got}"
        return f"must be a whole number, got {got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false, got {got}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {got}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {got}"
    if kind in ("too_short", "string_too_short"):
        if field == "versions":
            return 'must list at least one version, such as ["15"]'
        return "must not be empty"
    if kind == "string_type":
        message = f"must be a string, got {got}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            message += (
                f' (quote it: "{value}")'
                if isinstance(value, int)
                else " (quote it as written: YAML reads 10.10 as the number 10.1)"
            )
        return message
    if kind == "value_error":  # our own validators, whose messages name the value
        return str(error["msg"]).removeprefix("Value error, ")
    message = str(error["msg"])
    if isinstance(value, bool | int | float | str) or value is None:
        message += f", got {_show(value)}"
    return message


def _got(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _show(value)


def _is_null(node: Node) -> bool:
    tag = str(getattr(node.tag, "value", node.tag))
    return isinstance(node, ScalarNode) and tag == "tag:yaml.org,2002:null"


def _node_kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    return f"the value {_show(node.value)}" if isinstance(node, ScalarNode) else "something else"


def _scalar(value: Any) -> Any:
    """Plain Python for a ruamel scalar (ScalarInt and friends subclass the builtins)."""
    if value is None or isinstance(value, datetime.date):
        return value
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return plain(value)
    return value


def _key_pos(mapping: CommentedMap, key: Any, shown: str) -> _Pos:
    fallback = (mapping.lc.line + 1, mapping.lc.col + 1)
    try:
        key_line, key_col = mapping.lc.key(key)
        value_line, value_col = mapping.lc.value(key)
    except (KeyError, TypeError, IndexError):
        return _Pos(shown, fallback, fallback)
    return _Pos(shown, (key_line + 1, key_col + 1), (value_line + 1, value_col + 1))


def _item_pos(items: CommentedSeq, index: int, shown: str) -> _Pos:
    try:
        line, column = items.lc.item(index)
    except (KeyError, TypeError, IndexError):
        line, column = items.lc.line, items.lc.col
    return _Pos(shown, (line + 1, column + 1), (line + 1, column + 1))


def _mark_location(exc: MarkedYAMLError, shown: str) -> Location:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return Location(shown, 1, 1)
    return Location(shown, mark.line + 1, mark.column + 1)


def _yaml_message(exc: MarkedYAMLError) -> str:
    context = str(exc.context or "")
    mark = exc.context_mark
    if context and mark is not None and mark is not exc.problem_mark:
        context += f" (from line {mark.line + 1}, column {mark.column + 1})"
    problem = str(exc.problem or "")
    parts = [part for part in (context, problem) if part]
    message = "YAML syntax: " + (", ".join(parts) if parts else "invalid YAML")
    for needle, hint in _YAML_HINTS:
        if needle in f"{context} {problem}":
            return f"{message}; {hint}"
    return message


_YAML_HINTS = (
    ("flow sequence", "close the list with ] (and separate items with commas)"),
    ("flow mapping", "close the mapping with } (and separate entries with commas)"),
    ("quoted scalar", "close the quote"),
    ("expected <block end>", "indent this line like the keys above it, or nest it under a key"),
    ("mapping values are not allowed", 'put a space after each colon ("host: x"), here or on the line above'),
    ("could not find expected ':'", 'every key needs a colon and a space after it ("host: x")'),
)


def _codepoint(character: Any) -> str:
    code = character if isinstance(character, int) else ord(str(character)[:1] or "\0")
    return f"U+{code:04X}"


def _offset_to_line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _resolve(value: str, base: Path) -> str | None:
    try:
        path = Path(value).expanduser()
    except RuntimeError:
        return None
    if not path.is_absolute():
        path = base / path
    return str(Path(*_normalise(path.parts)))


def _normalise(parts: Sequence[str]) -> list[str]:
    """Drop `.` and fold `..` lexically, like os.path.normpath, without touching the file system."""
    out: list[str] = []
    for part in parts:
        if part == "..":
            if len(out) > 1:
                out.pop()
        elif part != ".":
            out.append(part)
    return out


def _kind_of(value: Any) -> str:
    if isinstance(value, CommentedMap | dict):
        return "a mapping"
    if isinstance(value, CommentedSeq | list):
        return "a list"
    return f"the value {_show(_scalar(value))}"


def _show(value: Any) -> str:
    if isinstance(value, str | bool | int | float) or value is None:
        try:
            return json.dumps(value, ensure_ascii=False)
        except ValueError:
            return repr(value)
    return repr(value)


def _dotted(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def _unknown(what: str, key: Any, where: str, allowed: list[str]) -> str:
    message = f"unknown {what} {_show(key)} in {where}"
    if isinstance(key, str):
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        if close:
            message += f' (did you mean "{close[0]}"?)'
    return message + f"; allowed: {', '.join(allowed)}"


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class validating the mapping at `loc`, to list its allowed keys."""
    if not loc:
        return Environment
    if loc[0] == "bindings":
        model: type[BaseModel] | None = Binding
        rest = loc[2:]
    else:
        model = ENTRY_SECTIONS.get(str(loc[0]))
        rest = loc[2:]
    for part in rest:
        if model is None:
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _model_of(field.annotation)
    return model


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
