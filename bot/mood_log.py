"""The bot's mood over time, kept in the state store (the math is bot.mood).

`MoodLog.advance(now)` starts from the last saved state and applies the
kicks since; `kick` records an input's kick (and applies it, so the state a
live pass saves with `save` holds it); `at(t)` projects the mood to a later
time with no new input (original posts use the mood of their publish time).
A dry run sees the live events and its own, saves no state, and its events
never count for live passes.
"""

import dataclasses

from bot import mood as mood_lib
from bot.feed import write_mood_plot
from bot.state import Store


@dataclasses.dataclass
class MoodLog:
  store: Store
  params: mood_lib.MoodParams
  dry_run: bool = False
  state: mood_lib.MoodState = None
  now: float = 0.0

  def _events(self, since: float) -> list:
    return [mood_lib.ForcingEvent(t=e["t"], u=e["u"], hours=e["hours"])
            for e in self.store.mood_events(since, dry_run=self.dry_run)]

  def advance(self, now: float) -> None:
    last = self.store.last_mood()
    if last is None:
      state = mood_lib.MoodState(t=now)
    else:
      state = mood_lib.MoodState(t=last["t"], x1=last["x1"], x2=last["x2"])
    self.state = mood_lib.advance(state, now, self._events(state.t),
                                  self.params)
    self.now = now

  @property
  def value(self) -> float:
    return mood_lib.mood_value(self.state, self.params)

  @property
  def sentiment_range(self) -> tuple:
    return mood_lib.sentiment_range(self.value, self.params)

  def at(self, t: float) -> float:
    """The mood value projected to time t >= now, with no new input."""
    return mood_lib.mood_value(mood_lib.advance(self.state, t, [],
                                                self.params), self.params)

  def kick(self, value: float, job_key: str) -> None:
    """An input of value v (bot.mood.kick_value) kicks the mood, once per
    job and mode."""
    e = mood_lib.input_event(self.now, value, self.params)
    if self.store.add_mood_event(e.t, e.u, e.hours, "user", value, job_key,
                                 dry_run=self.dry_run):
      self.state = dataclasses.replace(self.state, x2=self.state.x2 + e.u)

  def save(self) -> None:
    if not self.dry_run:
      s = self.state
      self.store.save_mood(s.t, s.x1, s.x2, self.value)

  def plot(self, path: str, days: float, ahead_hours: float) -> str:
    """Plots the mood of the last `days` and where it heads if nobody
    writes (`ahead_hours`) into the PNG `path`."""
    since = self.now - days * 86400
    history = self.store.mood_history(since - 86400)
    if history:
      start = history[0]
      state = mood_lib.MoodState(t=start["t"], x1=start["x1"], x2=start["x2"])
    else:
      state = self.state
    events = self._events(state.t)
    if state.t > since and state.x1 == 0.0 and state.x2 == 0.0:
      # At rest before its first record: the plot starts `days` back.
      state = mood_lib.MoodState(t=since, x1=0.0, x2=0.0)
    times, moods = mood_lib.trajectory(state, self.now + ahead_hours * 3600,
                                       events, self.params)
    ranges = [mood_lib.sentiment_range(m, self.params) for m in moods]
    dots = [(e["t"], e["sentiment"], e["source"])
            for e in self.store.mood_events(since, dry_run=self.dry_run)]
    return write_mood_plot(path, times, moods, ranges, dots, now=self.now)

  def movers(self, since: float, n: int) -> tuple:
    """What users sent since `since` that pushed the mood most up and most
    down: (up to n events, strongest first) each way."""
    events = [e for e in self.store.mood_events(since, dry_run=self.dry_run)
              if e["source"] == "user"]
    up = sorted((e for e in events if e["u"] > 0), key=lambda e: -e["u"])
    down = sorted((e for e in events if e["u"] < 0), key=lambda e: e["u"])
    return up[:n], down[:n]
