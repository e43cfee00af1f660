"""Loading devices.yaml with line numbers: every error names the file, the line and the field.

``${VAR}`` (or ``${VAR:-default}``) in any string is replaced by the environment variable, so secrets
never live in the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.config.checks import Loc, cross_check
from core.config.site import Config


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """devices.yaml is not valid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Reader:
    """Turns a composed YAML node tree into plain data, remembering each node's line."""

    def __init__(self, file: str, environ: dict[str, str]) -> None:
        self.file = file
        self.environ = environ
        self.lines: dict[Loc, int] = {}
        self.key_lines: dict[Loc, int] = {}
        self.issues: list[ConfigIssue] = []

    def issue(self, loc: Loc, line: int, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, line, format_loc(loc), message))

    def build(self, node: yaml.Node, loc: Loc = ()) -> Any:
        line = node.start_mark.line + 1
        self.lines[loc] = line
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.build_scalar(key_node)
                if not isinstance(key, str | int | float | bool):
                    self.issue(loc, key_node.start_mark.line + 1, "keys must be plain scalars")
                    continue
                skey = str(key).lower() if isinstance(key, bool) else str(key)
                child = (*loc, skey)
                if skey in out:
                    self.issue(child, key_node.start_mark.line + 1, "duplicate key")
                    continue
                self.key_lines[child] = key_node.start_mark.line + 1
                out[skey] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v, (*loc, i)) for i, v in enumerate(node.value)]
        value = self.build_scalar(node)
        if isinstance(value, str) and "${" in value:
            value = self.substitute(value, loc, line)
        return value

    def build_scalar(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return _construct(node)
        return None

    def substitute(self, text: str, loc: Loc, line: int) -> str:
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.issue(loc, line, f"environment variable {name} is not set")
            return ""

        return _ENV.sub(repl, text)

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest node of the file along loc (a missing or unknown key: its parent's)."""
        best = self.lines.get((), 1)
        for n in range(1, len(loc) + 1):
            cand = loc[:n]
            if cand not in self.lines:
                break
            best = self.key_lines.get(cand, self.lines[cand])
        return best


def _file_loc(loc: Loc) -> Loc:
    """A pydantic error's loc as keys of the file: without the device-kind tag pydantic adds."""
    if len(loc) > 2 and loc[0] == "devices" and isinstance(loc[1], int) and loc[2] in ("modbus", "mqtt"):
        return loc[:2] + loc[3:]
    return loc


_LOADER = yaml.SafeLoader("")


def _construct(node: yaml.ScalarNode) -> Any:
    return _LOADER.construct_object(node, deep=True)


def format_loc(loc: Iterable[str | int]) -> str:
    """('devices', 3, 'points', 1, 'type') → devices[3].points[1].type"""
    out = ""
    for seg in loc:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def _literal_choices(expected: str) -> str:
    return ", ".join(s.strip().strip("'\"") for s in re.split(r",\s*|\s+or\s+", expected) if s.strip())


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind == "literal_error":
        return f"{given!r} is not one of {_literal_choices(str(ctx.get('expected', '')))}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("less_than_equal", "less_than"):
        sign = "≤" if kind == "less_than_equal" else "<"
        return f"must be {sign} {ctx.get('le', ctx.get('lt'))} (got {given!r})"
    if kind in ("greater_than_equal", "greater_than"):
        sign = "≥" if kind == "greater_than_equal" else ">"
        return f"must be {sign} {ctx.get('ge', ctx.get('gt'))} (got {given!r})"
    if kind == "string_pattern_mismatch":
        return f"{given!r} is not a valid id (letters, digits, _ . : -; at most 64)"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    msg = str(err["msg"])
    if kind == "device_kind":
        return msg
    return f"{msg} (got {given!r})" if given is not None and not isinstance(given, dict | list) else msg


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read and validate devices.yaml; raise ConfigError listing every problem with its line."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(name, 0, "", f"cannot read: {exc.strerror or exc}")]) from None
    return parse_config(text, name, environ)


def parse_config(text: str, name: str = "devices.yaml", environ: dict[str, str] | None = None) -> Config:
    """Validate the text of a devices.yaml (``name`` is used in messages)."""
    reader = _Reader(name, dict(os.environ) if environ is None else environ)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([ConfigIssue(name, line, "", f"not valid YAML: {exc.problem or exc}")]) from None
    if node is None:
        data: Any = {}
    else:
        data = reader.build(node)
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigIssue(name, 1, "", "the file must be a mapping (site:, rooms:, devices:, ...)")]
        )
    cfg: Config | None = None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _file_loc(tuple(err["loc"]))
            reader.issue(loc, reader.line_of(loc), _message(err))
    if cfg is not None:
        for loc, message in cross_check(cfg, reader.line_of):
            reader.issue(loc, reader.line_of(loc), message)
    if reader.issues:
        reader.issues.sort(key=lambda i: i.line)
        raise ConfigError(reader.issues)
    assert cfg is not None
    return cfg
