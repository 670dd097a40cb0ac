"""One JSON-schema check for the files ganrt reads: a violation is one line naming the file and the field.

Bundle manifests, checkpoint metadata and tuning records are data from machines and people the reader does
not control: every field ganrt uses is typed and ranged here before any of it is used. The schemas live
next to their formats (ganrt.bundle, ganrt.checkpoint, ganrt.runtime.tuning); this module only runs them.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from ganrt.errors import GanrtError

MAX_MESSAGE = 160  # a value's repr in the message is cut here: the error stays one readable line

SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
TEXT = {"type": "string", "maxLength": 4096}
NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"}
COUNT = {"type": "integer", "minimum": 0}
OBJECT = {"type": "object"}


@functools.cache
def _validator(schema_json: str):
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_json)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def check(data: Any, schema: dict[str, Any], *, where: str, error: type[GanrtError]) -> None:
    """Raise ``error("<where>: <field path>: <what is wrong>")`` for the first (most relevant) violation."""
    from jsonschema.exceptions import best_match

    problem = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(data))
    if problem is None:
        return
    field = ".".join(str(p) for p in problem.absolute_path) or "(top level)"
    message = " ".join(problem.message.split())
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    raise error(f"{where}: {field}: {message}")
