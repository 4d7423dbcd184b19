"""The feed: what the bot posted (or would have), as JSONL, HTML and a mood plot.

In a dry run this is where the posts go instead of Tumblr; in a live run it
is a log a person can read. Each entry is one decision: the prompt, every
candidate with its selector and sentiment scores and verdict, the winner and
why it won, the mood, and where the post went (published, queue, draft, or
nothing); or, in a line, a job not taken (and why) or a command carried
out. `feed.jsonl` is appended to; `feed.html` is rewritten from it
(newest first) and `mood.png` plots the mood of the last days.
"""

import datetime
import html
import json
import os
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from atomic_files import atomic_write  # pylint: disable=g-import-not-at-top,wrong-import-position
from bot.records import written_by  # pylint: disable=g-import-not-at-top,wrong-import-position

FEED_JSONL = "feed.jsonl"
FEED_HTML = "feed.html"
MOOD_PNG = "mood.png"

_CSS = """
body { font-family: sans-serif; max-width: 52em; margin: 2em auto;
       color: #222; background: #f4f4f4; }
.post { background: #fff; border-radius: 6px; padding: 1em 1.4em;
        margin: 1.2em 0; box-shadow: 0 1px 3px #bbb; }
.meta { color: #777; font-size: 85%; }
.prompt { white-space: pre-wrap; background: #eef; padding: .6em;
          border-radius: 4px; }
.answer { white-space: pre-wrap; font-size: 110%; margin: .8em 0; }
table { border-collapse: collapse; width: 100%; font-size: 85%; }
td, th { border-top: 1px solid #ddd; padding: .3em; vertical-align: top;
         text-align: left; }
td.text { white-space: pre-wrap; }
tr.winner { background: #efe; }
.why { font-style: italic; }
.state-draft { color: #a60; } .state-none { color: #a00; }
.skip { padding: .3em 1.4em; box-shadow: none; background: #eee; }
"""


def _when(t: float) -> str:
  return datetime.datetime.fromtimestamp(
      t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class Feed:
  """A directory holding feed.jsonl, feed.html and mood.png."""

  def __init__(self, directory: str):
    os.makedirs(directory, exist_ok=True)
    self.directory = directory

  @property
  def jsonl_path(self) -> str:
    return os.path.join(self.directory, FEED_JSONL)

  def append(self, entry: dict) -> None:
    with open(self.jsonl_path, "a", encoding="utf-8") as f:
      f.write(json.dumps(entry, ensure_ascii=False) + "\n")

  def entries(self) -> list:
    if not os.path.exists(self.jsonl_path):
      return []
    with open(self.jsonl_path, encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.strip()]

  def write_html(self, title: str) -> str:
    path = os.path.join(self.directory, FEED_HTML)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{html.escape(title)}</h1>"]
    if os.path.exists(os.path.join(self.directory, MOOD_PNG)):
      parts.append(f"<p><img src='{MOOD_PNG}' alt='mood over the last days'"
                   f" width='100%'></p>")
    for entry in reversed(self.entries()):
      parts.append(_entry_html(entry))
    parts.append("</body></html>")
    with atomic_write(path) as f:
      f.write("\n".join(parts))
    return path

  @property
  def mood_path(self) -> str:
    return os.path.join(self.directory, MOOD_PNG)


def write_mood_plot(path: str, times: Sequence[float], moods: Sequence[float],
                    ranges: Sequence[tuple] = (),
                    events: Sequence[tuple] = (),
                    now: Optional[float] = None) -> str:
  """Plots mood (and the allowed sentiment band) against time into `path`.

  `events` are (time, sentiment, source) for what users sent and the bot
  wrote, drawn as dots; `now`, if given, is marked, and the curve after it
  is a projection.
  """
  fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
  dates = [datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
           for t in times]
  if ranges:
    ax.fill_between(dates, [r[0] for r in ranges], [r[1] for r in ranges],
                    color="tab:blue", alpha=0.12, label="allowed sentiment")
  ax.plot(dates, moods, color="tab:blue", label="mood")
  for source, color in (("user", "tab:orange"), ("bot", "tab:green")):
    pts = [(datetime.datetime.fromtimestamp(t, datetime.timezone.utc), s)
           for t, s, src in events if src == source and s is not None]
    if pts:
      ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10,
                 color=color, label=f"{source} sentiment", zorder=3)
  if now is not None:
    ax.axvline(datetime.datetime.fromtimestamp(now, datetime.timezone.utc),
               color="gray", linestyle="--", linewidth=1, label="now")
  ax.set_ylim(0, 1)
  ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
  ax.set_ylabel("mood; allowed P(positive)")
  ax.legend(loc="upper left", fontsize=7)
  fig.autofmt_xdate()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def _score(value) -> str:
  return "–" if value is None else f"{value:.3f}"


def _error_line(entry: dict) -> str:
  """A job whose handling raised (bot.loop): tried again, or parked."""
  if entry.get("parked"):
    return f"parked after {entry['errors']} errors: {entry['error']}"
  return (f"error {entry['errors']} of {entry['max_errors']} (tried again "
          f"next pass): {entry['error']}")


def _entry_html(entry: dict) -> str:
  esc = html.escape
  if "skipped" in entry or "command" in entry or "error" in entry:
    what = (f"skipped: {entry['skipped']}" if "skipped" in entry
            else f"command {entry['command']}" if "command" in entry
            else _error_line(entry))
    return (f"<div class='post skip'><div class='meta'>"
            f"{esc(_when(entry['t']))} · {esc(entry.get('kind', ''))} · "
            f"{esc(entry.get('job') or entry.get('stage', ''))}</div>"
            f"<p class='why'>{esc(what)}</p></div>")
  state = entry.get("state") or "none"
  winner = entry.get("winner")
  rows = []
  for i, c in enumerate(entry.get("candidates", [])):
    cls = " class='winner'" if i == winner else ""
    rows.append(
        f"<tr{cls}><td>{i}</td><td class='text'>{esc(c.get('text', ''))}</td>"
        f"<td>{_score(c.get('selector'))}</td>"
        f"<td>{_score(c.get('sentiment'))}</td>"
        f"<td>{esc(c.get('verdict', ''))}</td></tr>")
  answer = ""
  if winner is not None and entry.get("candidates"):
    answer = (f"<div class='answer'>"
              f"{esc(entry['candidates'][winner].get('text', ''))}</div>")
  tags = " ".join("#" + t for t in entry.get("tags", []))
  mood = entry.get("mood")
  mood_txt = f"mood {mood:.2f}" if isinstance(mood, (int, float)) else ""
  hits = entry.get("filter_hits") or []
  hits_txt = f" · word list: {esc(', '.join(hits))}" if hits else ""
  return (
      f"<div class='post'><div class='meta'>{esc(_when(entry['t']))} · "
      f"{esc(entry.get('kind', ''))} · {esc(entry.get('job', ''))} · "
      f"<span class='state-{esc(state)}'>{esc(state)}</span> · {mood_txt}"
      f"{hits_txt}</div>"
      f"<div class='prompt'>{esc(entry.get('prompt_shown', ''))}</div>"
      f"{answer}<div class='meta'>{esc(tags)}</div>"
      f"<p class='why'>{esc(entry.get('reason', ''))}</p>"
      + (f"<p class='by'>{esc(written_by(entry))}</p>"
         if written_by(entry) else "") +
      f"<table><tr><th>#</th><th>candidate</th><th>selector</th>"
      f"<th>sentiment</th><th>verdict</th></tr>{''.join(rows)}</table></div>")
