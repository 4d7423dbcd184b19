"""Forgiving readers for fields of the API's dicts.

Posts come from the API, from tumblr-backup files written years apart and
from hand-written examples; any field may be missing or of the wrong type.
These readers return an empty value instead of raising.
"""

from typing import Any, List, Optional, Tuple


def dicts(value: Any) -> List[dict]:
  """The dicts in a list (or a lone dict), ignoring anything else."""
  if isinstance(value, dict):
    return [value]
  if isinstance(value, list):
    return [v for v in value if isinstance(v, dict)]
  return []


def integer(value: Any) -> Optional[int]:
  """`value` as an int (ids and timestamps come as numbers or strings)."""
  if isinstance(value, bool):
    return None
  try:
    return int(value)
  except (TypeError, ValueError, OverflowError):  # None, "x", nan; inf
    return None


# Unix seconds of 0001-01-01 and 9999-12-31 23:59:59 UTC: the times a date
# can be written for.
_FIRST_SECOND, _LAST_SECOND = -62135596800, 253402300799


def timestamp(value: Any) -> Optional[int]:
  """`value` as unix seconds, or None where it is no time a calendar has
  (10**13, -10**13, 1e300, inf, nan, "soon")."""
  seconds = integer(value)
  if seconds is None or not _FIRST_SECOND <= seconds <= _LAST_SECOND:
    return None
  return seconds


def string(value: Any) -> str:
  return value if isinstance(value, str) else ""


def tags(value: Any) -> Tuple[str, ...]:
  """A post's tags: strings only, each on one line, no empty ones."""
  out = []
  for tag in value if isinstance(value, list) else []:
    if isinstance(tag, str) and tag.split():
      out.append(" ".join(tag.split()))
  return tuple(out)
