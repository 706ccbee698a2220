"""How a manifest that cannot be read is described: each problem as `dotted.key.path: what is
wrong` (never pydantic's own words), as exit 3 with the rebuild hint; and the JSON and file-name
rules the manifest's reader applies before and after its schema (manifest.Manifest.from_dict)."""
from __future__ import annotations

import json
from typing import List

from .errors import StageError

REBUILD = "rebuild the bundle with edgecompress deploy (do not edit the files inside it)"


def decode(raw: bytes, where: str):
    """The JSON value in `raw`: a StageError naming `where` if it is not UTF-8 JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise stage(f"{where} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise stage(f"{where} is not valid JSON: {exc}") from None


def is_inside_name(rel) -> bool:
    """A relative path of plain parts (no '..', no absolute path, no backslash)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or rel.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def stage(message: str) -> StageError:
    return StageError("verify", message, hint=REBUILD)


def unreadable(where: str, problems: List[str]) -> StageError:
    return stage(f"{where} is not a manifest edgecompress can read:\n  " + "\n  ".join(problems))


# what a pydantic error type expects, in the words of the messages above
EXPECTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a number", "number_type": "a number",
            "bool_type": "true or false", "dict_type": "an object", "model_type": "an object",
            "model_attributes_type": "an object", "list_type": "a list", "version_type": "a version number",
            "dim_type": "a dimension (a size, a name or null)"}


def problem(error: dict) -> str:
    """One pydantic error as 'dotted.key.path: what is wrong', never pydantic's own text."""
    path = ".".join(str(part) for part in error["loc"]) or "the manifest"
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return f"{path}: missing"
    if kind in EXPECTED:
        return f"{path}: is {_what(value)}, expected {EXPECTED[kind]}"
    message = error["msg"]
    return f"{path}: {message[:1].lower()}{message[1:]}, got {_what(value)}"


def _what(value) -> str:
    if value is None:
        return "null"
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
