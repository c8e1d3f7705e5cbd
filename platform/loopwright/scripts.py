"""Calling Redis Lua scripts with named keys and named arguments.

Positional ``KEYS[3]`` and ``ARGV[11]`` with ``-`` placeholders are hard to read and easy to
get wrong. A script that starts with :data:`NAMED` reads its keys as ``K.<name>`` and its
arguments as ``A.<name>``: ``ARGV[1]`` lists the names of ``KEYS`` in order and ``ARGV[2]`` is
one JSON object of the arguments. An optional key or argument is simply left out (``nil`` in
the script) instead of being passed as a placeholder, and every key stays declared in KEYS.
"""

from __future__ import annotations

import json
from typing import Any

# Decodes the convention into ``K`` (keys by name) and ``A`` (arguments by name).
NAMED = """
local K, A = {}, cjson.decode(ARGV[2])
do
  local i = 1
  for name in string.gmatch(ARGV[1], '%S+') do K[name] = KEYS[i]; i = i + 1 end
end
"""


def named(keys: dict[str, str | None], args: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(``keys``, ``args``) to call a script using :data:`NAMED` with. Keys and arguments given as
    None are left out. JSON has no place for a Lua nil, so None must never reach the script
    as ``null`` (it would arrive as the truthy ``cjson.null``)."""
    present = {name: key for name, key in keys.items() if key is not None}
    payload = {name: value for name, value in args.items() if value is not None}
    return list(present.values()), [" ".join(present), json.dumps(payload, ensure_ascii=False)]
