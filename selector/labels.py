"""Training labels for the heads: note counts, user columns, sentiment.

Selector labels follow the original bot: a post "did well" when its note count
is in the top quartile of the posts of its own kind from the trailing window
before it (14 days; 42 for original posts, which are rarer), and "did badly"
in the bottom quartile. The middle half is dropped: it carries little signal
and mostly noise. Comparing within a kind and a recent window takes out the
blog's growth and the different reach of asks, reblogs and original posts.

These functions work on plain records (kind, timestamp, note count); turning
tumblr posts into records is the caller's business (see launch/).
"""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from gpt2.errors import UserError

# Post kinds: answered asks, reblogs and replies, original posts.
KINDS = ("ask", "reblog", "original")
WINDOW_DAYS = {"ask": 14.0, "reblog": 14.0, "original": 42.0}
NO_LABEL = -1
_DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class PostRecord:
  """What labelling needs to know about one post."""
  kind: str  # one of KINDS
  timestamp: float  # unix seconds
  note_count: Optional[float]  # None when the scrape has no count


@dataclasses.dataclass
class NoteLabels:
  """Labels for a list of records, in the records' order.

  labels: (N,) int, 1 top quartile, 0 bottom quartile, NO_LABEL otherwise.
  low, high: (N,) the window's quantiles each post was compared with (nan
    for posts without a note count).
  """
  labels: np.ndarray
  low: np.ndarray
  high: np.ndarray
  n_without_notes: int  # skipped: no note count
  n_dropped: int  # no label: the middle band, or a window of equal counts

  @property
  def labelled(self) -> np.ndarray:
    """Indices of the records that got a label."""
    return np.flatnonzero(self.labels != NO_LABEL)


def note_count_labels(records: Sequence[PostRecord],
                      window_days: Optional[dict] = None,
                      low_quantile: float = 0.25,
                      high_quantile: float = 0.75) -> NoteLabels:
  """Top/bottom-quantile labels against a trailing window of the same kind.

  A post at time t is compared with the note counts of the posts of its kind
  with timestamps in (t - window, t], itself included (as pandas' time-based
  `rolling` does). Quantiles interpolate linearly (numpy's default). A post
  is labelled 1 when its count is at or above the high quantile, 0 at or
  below the low one; a post for which both hold (a window of equal counts)
  or neither (the middle band) gets no label.
  """
  window_days = {**WINDOW_DAYS, **(window_days or {})}
  n = len(records)
  labels = np.full(n, NO_LABEL, np.int64)
  low = np.full(n, np.nan)
  high = np.full(n, np.nan)
  n_without = 0
  by_kind = {k: [] for k in KINDS}
  for i, r in enumerate(records):
    if r.kind not in by_kind:
      raise UserError(f"post kind {r.kind!r} is not one of {', '.join(KINDS)}")
    if r.note_count is None:
      n_without += 1
      continue
    by_kind[r.kind].append(i)
  for kind, idx in by_kind.items():
    if not idx:
      continue
    idx = np.asarray(idx)
    times = np.array([records[i].timestamp for i in idx], np.float64)
    counts = np.array([records[i].note_count for i in idx], np.float64)
    order = np.argsort(times, kind="stable")
    idx, times, counts = idx[order], times[order], counts[order]
    width = window_days[kind] * _DAY
    starts = np.searchsorted(times, times - width, side="right")
    ends = np.searchsorted(times, times, side="right")
    for j in range(len(idx)):
      window = counts[starts[j]:ends[j]]
      lo, hi = np.quantile(window, [low_quantile, high_quantile])
      low[idx[j]], high[idx[j]] = lo, hi
      is_high, is_low = counts[j] >= hi, counts[j] <= lo
      if is_high != is_low:
        labels[idx[j]] = 1 if is_high else 0
  n_dropped = int(np.sum(labels == NO_LABEL)) - n_without
  return NoteLabels(labels=labels, low=low, high=high,
                    n_without_notes=n_without, n_dropped=n_dropped)


def _as_number(value, what: str) -> float:
  """A float from a JSON value; a UserError naming `what` otherwise."""
  if isinstance(value, bool):
    return float(value)
  if isinstance(value, (int, float)) and math.isfinite(value):
    return float(value)
  if isinstance(value, str):
    try:
      number = float(value)
    except ValueError:
      number = math.nan
    if math.isfinite(number):
      return number
  raise UserError(f"{what} is {value!r}, not a number")


def post_record(row: dict, where: str) -> PostRecord:
  """A PostRecord from a JSON row with `kind`, `timestamp`, `note_count`.

  `where` names the row in messages ("posts.jsonl line 3").
  """
  kind = row.get("kind")
  if kind not in KINDS:
    raise UserError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
  if "timestamp" not in row:
    raise UserError(f"{where} has no timestamp")
  timestamp = _as_number(row["timestamp"], f"{where}: timestamp")
  notes = row.get("note_count")
  note_count = None if notes is None else _as_number(
      notes, f"{where}: note_count")
  return PostRecord(kind=kind, timestamp=timestamp, note_count=note_count)


def binary_label(value, where: str) -> float:
  """A 0/1 label from a user's column; a clear message for anything else."""
  number = _as_number(value, where)
  if number not in (0.0, 1.0):
    raise UserError(f"{where} is {value!r}; the selector needs labels 0 or 1")
  return number


def numeric_label(value, where: str) -> float:
  """A real-valued target (sentiment) from a user's column."""
  return _as_number(value, where)


def vader_sentiment(texts: Sequence[str]) -> np.ndarray:
  """VADER's compound score in [-1, 1] for each text (offline, lexicon)."""
  # pylint: disable-next=import-outside-toplevel
  from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
  analyzer = SentimentIntensityAnalyzer()
  return np.asarray([analyzer.polarity_scores(t)["compound"] for t in texts],
                    np.float32)
