"""Hydra configuration: compose `configs/<command>.yaml` with `key=value` overrides.

Every command has one config file in configs/ named after it. Overrides use hydra's grammar
(`key=value`, `group=option`, `+new_key=value`); an unknown key is an error, never ignored, and
a value of the wrong type for its key (`steps=abc`) is an error naming the key. The comment on a
key's line in the YAML is its one-line description (`describe`, `robot-calql <command> --help`).
"""

from __future__ import annotations

import ast
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

_PACKAGE_DATA = Path(__file__).resolve().parent / "_data"


def _data_root() -> Path:
    """Where configs/ and calibration/ are: an installed wheel's copy (robot_calql/_data/,
    pyproject.toml's package-dir), else the source checkout (editable install, PYTHONPATH)."""
    if (_PACKAGE_DATA / "configs").is_dir():
        return _PACKAGE_DATA
    return Path(__file__).resolve().parent.parent


# relative data paths (configs/..., calibration/<cell>) are taken from here
REPO_ROOT = _data_root()
CONFIG_DIR = Path(os.environ.get("ROBOT_CALQL_CONFIGS", REPO_ROOT / "configs"))


def data_path(path: str | os.PathLike) -> Path:
    """A relative data path of a config (calibration/..., robot_calql/sim/assets/...) from REPO_ROOT;
    in an installed wheel a path under robot_calql/ is the installed package's own file."""
    p = Path(path)
    if p.parts[:1] == ("robot_calql",) and not (REPO_ROOT / p).exists():
        return Path(__file__).resolve().parent.parent / p
    return REPO_ROOT / p


class ConfigError(ValueError):
    """A configuration that cannot be composed or does not make sense."""


def compose(config_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose configs/<config_name>.yaml with overrides; raise ConfigError naming the problem."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not (CONFIG_DIR / f"{config_name}.yaml").is_file():
        raise ConfigError(f"no config '{config_name}.yaml' in {CONFIG_DIR}")
    overrides = [_agent_override(o) for o in overrides]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = ""
        if "not in struct" in str(e) or "Could not override" in str(e):
            hint = f" (known keys: {', '.join(_known_keys(config_name))}; use +key=value to add one)"
        raise ConfigError(f"config '{config_name}': {msg}{hint}") from None
    OmegaConf.set_struct(cfg, True)
    if overrides:
        check_override_types(config_name, overrides, cfg)
    return cfg


def _known_keys(config_name: str) -> list[str]:
    try:
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir

        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name)
        return sorted(str(k) for k in cfg.keys())
    except Exception:  # pragma: no cover - only used to improve an error message
        return []


# An `agent:` block holds only a recipe's changes to CalQLConfig (robot_calql/agent/calql.py), the
# one source of the agent's defaults: its fields' types and one-line docs come from there.
_AGENT_KEY = re.compile(r"^\+{0,2}(?P<key>(?:[\w-]+\.)*agent\.[\w.-]+=)")


def _agent_override(text: str) -> str:
    """`agent.<key>=v` and `+agent.<key>=v` (also under a block, e.g. learner.agent) as hydra's
    `++` (set or add): any CalQLConfig field can be set whether or not the recipe changes it."""
    m = _AGENT_KEY.match(text)
    return "++" + text[m.start("key"):] if m else text


# CalQLConfig's source (read as text: this module imports no agent code, and help stays fast)
_AGENT_CONFIG = (Path(__file__).resolve().parent / "agent" / "calql.py", "CalQLConfig")


def _default_value(node: ast.expr) -> Any:
    """A dataclass field's default from its source expression: literals, tuples (as lists),
    [-]math.inf and field(default=... | default_factory=dict/list/tuple)."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "field":
        for kw in node.keywords:
            if kw.arg == "default":
                return _default_value(kw.value)
            if kw.arg == "default_factory" and getattr(kw.value, "id", "") in ("dict", "list", "tuple"):
                return {} if kw.value.id == "dict" else []  # type: ignore[attr-defined]
    if isinstance(node, ast.Attribute) and node.attr == "inf":
        return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_default_value(node.operand)
    v = ast.literal_eval(node)
    return list(v) if isinstance(v, tuple) else v


def _agent_fields() -> dict[str, tuple[Any, str]]:
    """{field: (default, the comment on its line)} of CalQLConfig, read from its source."""
    path, name = _AGENT_CONFIG
    text = path.read_text()
    lines = text.splitlines()
    cls = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == name)
    out: dict[str, tuple[Any, str]] = {}
    for n in cls.body:
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.value is not None:
            out[n.target.id] = (_default_value(n.value), _split_comment(lines[n.end_lineno - 1])[1])  # type: ignore[index]
    return out


def agent_defaults() -> dict[str, Any]:
    """CalQLConfig's defaults as plain config values (tuples as lists), by field name."""
    return {k: v for k, (v, _) in _agent_fields().items()}


def agent_field_docs() -> dict[str, str]:
    """The comment on each CalQLConfig field's line (its one-line doc), by field name."""
    return {k: doc for k, (_, doc) in _agent_fields().items()}


def check_override_types(config_name: str, overrides: list[str] | tuple[str, ...], cfg: DictConfig) -> None:
    """Raise ConfigError when an override's value does not have its key's type (the type of the
    key's default in configs/<config_name>.yaml): `steps=abc` -> "steps expects an integer"."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        base = hydra_compose(config_name=config_name)
    for text, ov in zip(overrides, parsed, strict=True):
        if ov.is_delete():
            continue
        key = ov.key_or_group
        default = _select(base, key)
        if default is _ABSENT:  # a new key (+key=...): only an agent block's keys have a type
            parent, _, leaf = key.rpartition(".")
            default = agent_defaults().get(leaf, _ABSENT) if parent.rpartition(".")[2] == "agent" else _ABSENT
        value = _select(cfg, key)
        if default is _ABSENT or value is _ABSENT:
            continue
        expected = _expected_type(default, value, key)
        if expected:
            raw = text.split("=", 1)[1] if "=" in text else text
            raise ConfigError(f"{key}={raw}: {key} expects {expected} (default: {_fmt(default)})")


_ABSENT = object()


def _select(cfg: DictConfig, key: str) -> Any:
    """The plain value at a dotted key (interpolations resolved), None for `???`, _ABSENT if none."""
    try:
        v = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    except Exception:  # an interpolation that cannot be resolved here: no type to compare
        return _ABSENT
    return OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _expected_type(default: Any, value: Any, key: str = "") -> str | None:
    """What a key with this default takes, when `value` is not that; None when it fits.
    Seconds and rates (keys named *_s, *_hz) take any number even where the default is whole."""
    if default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int) and not key.endswith(("_s", "_hz")):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, int):
        return None if _is_number(value) else "a number"
    if isinstance(default, float):  # a list of numbers: one per action axis (explore_temperature)
        ok = _is_number(value) or (isinstance(value, list) and all(_is_number(x) for x in value))
        return None if ok else "a number"
    if isinstance(default, str):
        return None if value is None or isinstance(value, (str, int, float, bool)) else "a string"
    if isinstance(default, list):
        return None if value is None or isinstance(value, list) else "a list, e.g. [a,b]"
    if isinstance(default, dict):
        return None if value is None or isinstance(value, dict) else "a mapping (key: value, ...)"
    return None


def _fmt(v: Any) -> str:
    """A value as it is written in an override (null, true, [a, b])."""
    if v is None:
        return "null"
    if v == "":
        return '""'
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


@dataclass(frozen=True)
class KeyDoc:
    """One line of `robot-calql <command> --help`: a key (or a config group) and its description."""

    key: str  # dotted key, or a config group's name
    default: str  # the default, as an override writes it (a group: its default option)
    doc: str  # the comment on the key's line in the YAML ("" when there is none)
    group: bool = False  # a config group, chosen with <group>=<option>


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*)\s*:(?P<rest>.*)$")
_DEFAULTS_ITEM = re.compile(r"^\s*-\s*(?P<group>[\w/-]+)\s*:(?P<rest>.*)$")


def _comment_start(text: str) -> int:
    """Index of the # that starts a comment in `text` (not inside quotes, after a space), or -1."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return i
    return -1


def _split_comment(text: str) -> tuple[str, str]:
    """`value  # comment` -> (value, comment)."""
    i = _comment_start(text)
    return (text.strip(), "") if i < 0 else (text[:i].strip(), text[i + 1:].strip())


def _one_line(text: str, width: int = 120) -> str:
    """`text` cut at a word boundary to `width` characters (" ..." marks the cut)."""
    return text if len(text) <= width else text[: text.rfind(" ", 0, width - 4)] + " ..."


def yaml_comments(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """The comment on each key's line of a config file, by dotted key (with the comment lines
    aligned under it that continue it, cut to one line), and its defaults list's groups:
    {group: (default option, comment)}. Block-style YAML as configs/ writes it."""
    keys: dict[str, str] = {}
    groups: dict[str, tuple[str, str]] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    last: tuple[str, int] | None = None  # the last key with a comment, and the key's indent
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and last and line.index("#") > last[1]:
            keys[last[0]] += " " + stripped[1:].strip()  # a comment continued on the next line
            continue
        last = None
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("-"):  # a list item: only the defaults list's `- group: option` count
            m = _DEFAULTS_ITEM.match(line)
            if m and stack and stack[-1][1] == "defaults":
                groups[m["group"]] = _split_comment(m["rest"])
            continue
        m = _KEY_LINE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        key = ".".join(k for _, k in stack)
        keys[key] = _split_comment(m["rest"])[1]
        if keys[key]:
            last = (key, indent)
    keys.pop("defaults", None)
    return {k: _one_line(v) for k, v in keys.items()}, groups


def _leaves(d: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def describe(config_name: str) -> list[KeyDoc]:
    """Every key of configs/<config_name>.yaml (dotted, after composition) with its default and
    the comment on its line, and one entry per config group of its defaults list."""
    path = CONFIG_DIR / f"{config_name}.yaml"
    comments, groups = yaml_comments(path)
    base = OmegaConf.to_container(compose(config_name), resolve=False)
    docs: list[KeyDoc] = []
    subtree_groups = set()
    for group, (option, comment) in groups.items():
        files = sorted((CONFIG_DIR / group).glob("*.yaml"))
        options = ", ".join(f.stem for f in files)
        global_ = bool(files) and all(f.read_text().startswith("# @package _global_") for f in files)
        where = f"configs/{group}/<option>.yaml: {options}"
        if not global_:
            subtree_groups.add(group)
            where += f"; one of its keys: {group}.<key>=<value>"
        doc = f"{comment} ({where})" if comment else where
        docs.append(KeyDoc(group, option, doc, group=True))
    agent_docs: dict[str, str] | None = None
    for key, value in _leaves(base):
        if key.split(".")[0] in subtree_groups:
            continue
        doc = comments.get(key, "")
        parent, _, leaf = key.rpartition(".")
        if not doc and parent.rpartition(".")[2] == "agent":
            agent_docs = agent_field_docs() if agent_docs is None else agent_docs
            doc = agent_docs.get(leaf, "")
        docs.append(KeyDoc(key, _fmt(value), doc))
    return docs


def resolve_path(p: str | os.PathLike | None) -> Path | None:
    """Expand ~ and make a config path absolute (relative paths are relative to the cwd)."""
    if p is None or str(p) == "" or str(p).lower() == "none":
        return None
    return Path(os.path.expanduser(str(p))).resolve()


def read_yaml_mapping(path: str | os.PathLike, what: str, error: type[Exception] = ConfigError, hint: str = "") -> dict:
    """Read a YAML mapping; raise `error` naming the file when it is missing (with `hint`
    appended), not YAML, or not a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {path}{hint}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{what} file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{what} file {path} must hold a mapping, got {type(data).__name__}")
    return data


def read_robot_file(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict:
    """A robot config file (configs/robot/<name>.yaml) as a plain mapping, with its `defaults`
    applied as Hydra composes the robot group: a file may start from other robot configs of its
    own folder (`defaults: [sim_standin, _self_]`), merged in that order, `_self_` standing for
    the file's own keys (last when not listed). ConfigError naming the file when it is missing,
    not a YAML mapping, or its defaults name a file that is not there or include it again."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"robot config {path}: its defaults include it again ({' -> '.join(p.name for p in _seen)})")
    data = read_yaml_mapping(path, "robot config")
    defaults = data.pop("defaults", None)
    if defaults is None:
        return data
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"robot config {path}: defaults must be a list of robot config names (and _self_), "
                          f"got {defaults!r}")
    order = defaults if "_self_" in defaults else [*defaults, "_self_"]
    parts = [data if d == "_self_" else read_robot_file(path.parent / f"{d}.yaml", (*_seen, path)) for d in order]
    merged = OmegaConf.to_container(OmegaConf.merge(*parts), resolve=False)
    assert isinstance(merged, dict)
    return merged
