"""Reading YAML files for profiles and inventories: UTF-8 named when it is not, duplicate keys refused
with both lines, and `--set key=value` overrides applied to the data before the schema checks it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import yaml

from .errors import ProfileError


UTF8_HINT = "save it as UTF-8 (in the editor's Save As, choose the encoding UTF-8)"


def yaml_text(path: Path, what: str, error=ProfileError) -> str:
    """The file's text, which YAML readers here take as UTF-8 (a UTF-8 BOM is fine). Windows
    Notepad's "Unicode" (UTF-16) and Latin-1 files are named as such instead of a UnicodeDecodeError."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise error(f"{what} {path} is saved as UTF-16 (Windows' \"Unicode\"), not UTF-8", hint=UTF8_HINT)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"{what} {path} is not UTF-8: byte 0x{raw[exc.start]:02x} on line {line} is not valid UTF-8 "
                    "(a Latin-1 or Windows-1252 file, such as an umlaut in a comment)", hint=UTF8_HINT) from None


def duplicate_keys(node, path: str = "", seen=None) -> List[str]:
    """Every key given twice in one mapping of a composed YAML document, with both lines: PyYAML keeps
    the last silently, so a second `prune:` block would replace the first without a word."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias to a node already walked
        return []
    seen.add(id(node))
    found: List[str] = []
    if isinstance(node, yaml.MappingNode):
        lines: Dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            dotted = f"{path}.{key}" if path else str(key)
            if key is not None and key in lines:
                found.append(f"'{dotted}' is given twice, on lines {lines[key]} and {key_node.start_mark.line + 1} "
                             "(YAML would keep only the last)")
            elif key is not None:
                lines[key] = key_node.start_mark.line + 1
            found += duplicate_keys(value_node, dotted, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += duplicate_keys(item, f"{path}[{i}]", seen)
    return found


def load_yaml(path: Path, what: str, error=ProfileError, hint: str = "") -> Any:
    """yaml.safe_load of a UTF-8 file that refuses duplicate keys; every problem names the file
    (`what` says which kind) and its line."""
    text = yaml_text(path, what, error)
    try:
        doubled = duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}", hint=f"fix the line named above{hint}") from None
    if doubled:
        raise error(f"{what} {path} has {len(doubled)} key(s) given twice:\n  " + "\n  ".join(doubled),
                    hint="merge the two into one block, or delete the one you do not mean") from None
    return data


def read_profile_yaml(path: Path) -> dict:
    """A profile file's YAML, which must be a mapping of keys (not yet checked against the schema)."""
    data = load_yaml(path, "profile", hint="; edgecompress targets show NAME prints a valid profile")
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path} must be a mapping of keys, got {type(data).__name__}",
                           hint="start from edgecompress targets show NAME > my-target.yaml")
    return data


def parse_overrides(pairs: List[str]) -> Dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ProfileError(f"--set {pair!r} is not key=value", hint="example: --set prune.ratio=0.3")
        out[key.strip()] = value
    return out


def apply_override(data: dict, key: str, raw: str) -> None:
    """Sets the dotted `key` in the profile data to `raw` read as YAML (empty: null)."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ProfileError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
