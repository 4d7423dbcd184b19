"""The bot's mood: a day's base mood, and a bounded response to what people
send, relaxing back within hours. The math; bot.mood_log keeps its history.

Moods are named, as the original's later design had them, each allowing a
range of candidate sentiments (the probability that a text is positive):

    position  name             allowed sentiment
    0         only_sad         0.00 - 0.26
    1         only_non_happy   0.00 - 0.46
    2         meh              0.01 - 0.70
    3         only_non_sad     0.05 - 1.00
    4         only_happy       0.12 - 1.00

The mood is a position on that scale; between names the ranges are
interpolated. Each day has a base position, one of the names drawn from a
hash of the date (`base_weights`: meh the likeliest), and the base moves
from yesterday's to today's over the first `transition_hours` of the day.

On top of the base, the response to people: each input (an ask, a reply, a
reblog with a comment) kicks a second-order linear system once, by the
weighted average v of the input's sentiment and the 75th percentile of the
sentiments of the candidates written for it (`input_weight` on the
input). With time in hours,

    x1' = -x1 / tau1 + x2,    x2' = -x2 / tau2    (x2 jumps by kick (v - 0.5)
                                                   at an input)

and the mood's position is `base + bound * tanh(x1 / bound)`: however many
inputs arrive, the response never moves the mood more than `bound` names
away from the base (a burst of 20 glowing asks in an hour moves it at most
one name up), and with no input it decays with tau1 (4 h: after a day, less
than 1% of it is left). The mood value used elsewhere is the position over
4, in [0, 1] (0: only sad, 1: only happy).

Between events the system is solved in closed form, so the state after an
interval does not depend on how the interval is cut. Events of earlier
versions that held a forcing for some hours (`hours` > 0) are still
integrated as such.
"""

import dataclasses
import datetime
import hashlib
import math
from typing import Iterable, Sequence

import numpy as np

# (name, lowest and highest allowed candidate sentiment), sad to happy.
NAMED_MOODS = (("only_sad", 0.0, 0.26), ("only_non_happy", 0.0, 0.46),
               ("meh", 0.01, 0.70), ("only_non_sad", 0.05, 1.0),
               ("only_happy", 0.12, 1.0))
TOP = len(NAMED_MOODS) - 1  # the happiest position


@dataclasses.dataclass(frozen=True)
class MoodParams:
  """Constants of the mood (config keys `mood.*`)."""
  tau1_hours: float = 4.0  # how fast the response fades
  tau2_hours: float = 1.0  # how fast a kick builds up
  kick: float = 1.0  # the jump of x2 per unit of (v - 0.5)
  input_weight: float = 0.5  # of the input's sentiment, vs the candidates'
  bound: float = 1.0  # the most the response moves the mood, in names
  base_weights: tuple = (1.0, 2.0, 4.0, 2.0, 1.0)  # daily base odds
  transition_hours: float = 3.0  # yesterday's base to today's

  @classmethod
  def from_config(cls, cfg) -> "MoodParams":
    """Builds the params from a mapping (a ConfigDict or dict); unknown keys
    are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for k, v in dict(cfg).items():
      if k in names:
        values[k] = (tuple(float(x) for x in v) if k == "base_weights"
                     else float(v))
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class MoodState:
  """The response's state at unix time `t` (seconds)."""
  t: float
  x1: float = 0.0
  x2: float = 0.0


@dataclasses.dataclass(frozen=True)
class ForcingEvent:
  """A kick of x2 by `u` at `t` (`hours` 0), or, from earlier versions, `u`
  held over [t, t + hours * 3600)."""
  t: float
  u: float
  hours: float = 0.0


def _relative_decay(a: float, b: float, t: float) -> float:
  """(exp(-b t) - exp(-a t)) / (a - b), stable when a is close to b."""
  d = a - b
  if abs(d * t) < 1e-9:
    return t * math.exp(-a * t)
  return math.exp(-a * t) * math.expm1(d * t) / d


def step(x1: float, x2: float, u: float, hours: float,
         params: MoodParams) -> tuple:
  """Exact solution after `hours` with a constant forcing `u` on x2.

  With a = 1/tau1, b = 1/tau2 the steady states are x2* = u / b and
  x1* = x2* / a; the deviations decay as y(t) = y0 e^{-at} +
  z0 (e^{-bt} - e^{-at}) / (a - b), z(t) = z0 e^{-bt}.
  """
  if hours < 0:
    raise ValueError(f"cannot step the mood backwards ({hours} h)")
  a, b = 1 / params.tau1_hours, 1 / params.tau2_hours
  x2_star = u / b
  x1_star = x2_star / a
  y0, z0 = x1 - x1_star, x2 - x2_star
  y = y0 * math.exp(-a * hours) + z0 * _relative_decay(a, b, hours)
  z = z0 * math.exp(-b * hours)
  return x1_star + y, x2_star + z


def forcing_at(events: Sequence[ForcingEvent], t: float) -> float:
  """The held forcing at time t (events starting at t count)."""
  return sum(e.u for e in events
             if e.hours > 0 and e.t <= t < e.t + e.hours * 3600)


def advance(state: MoodState, t_end: float, events: Iterable[ForcingEvent],
            params: MoodParams) -> MoodState:
  """Steps `state` to `t_end` exactly: kicks at their times (a kick at
  `state.t` is taken as already in the state), held forcings piece by
  piece."""
  if t_end <= state.t:
    return state
  events = [e for e in events
            if (e.hours == 0 and state.t < e.t <= t_end)
            or (e.hours > 0 and e.t < t_end
                and e.t + e.hours * 3600 > state.t)]
  cuts = {state.t, t_end}
  for e in events:
    for c in ((e.t,) if e.hours == 0 else (e.t, e.t + e.hours * 3600)):
      if state.t < c < t_end:
        cuts.add(c)
  cuts = sorted(cuts)
  x1, x2 = state.x1, state.x2
  for t0, t1 in zip(cuts[:-1], cuts[1:]):
    x1, x2 = step(x1, x2, forcing_at(events, t0), (t1 - t0) / 3600, params)
    x2 += sum(e.u for e in events if e.hours == 0 and e.t == t1)
  return MoodState(t=t_end, x1=x1, x2=x2)


def _day_base(day: datetime.date, params: MoodParams) -> int:
  """The day's named base mood (its position), from a hash of the date."""
  digest = hashlib.sha256(day.isoformat().encode()).digest()
  uniform = int.from_bytes(digest[:8], "big") / 2**64
  weights = np.asarray(params.base_weights, float)
  edges = np.cumsum(weights / weights.sum())
  return int(min(np.searchsorted(edges, uniform, side="right"), TOP))


def daily_base(t: float, params: MoodParams) -> float:
  """The base position at unix time t: the day's named mood, reached from
  yesterday's over the first `transition_hours` of the day (UTC). Every
  process agrees on it without storing it."""
  when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
  today = _day_base(when.date(), params)
  hours = when.hour + when.minute / 60 + when.second / 3600
  if params.transition_hours <= 0 or hours >= params.transition_hours:
    return float(today)
  yesterday = _day_base(when.date() - datetime.timedelta(days=1), params)
  share = hours / params.transition_hours
  return yesterday + (today - yesterday) * share


def base_name(t: float, params: MoodParams) -> str:
  """The name of the day's base mood at t."""
  when = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
  return NAMED_MOODS[_day_base(when.date(), params)][0]


def response(x1: float, params: MoodParams) -> float:
  """The response's move of the mood's position: at most `bound`."""
  return params.bound * math.tanh(x1 / params.bound)


def position(state: MoodState, params: MoodParams) -> float:
  """The mood's position on the named scale (0 only sad ... 4 only happy)."""
  p = daily_base(state.t, params) + response(state.x1, params)
  return min(max(p, 0.0), float(TOP))


def mood_value(state: MoodState, params: MoodParams) -> float:
  """The mood in [0, 1]: its position over the scale's length."""
  return position(state, params) / TOP


def sentiment_range(mood: float, params: MoodParams = MoodParams()) -> tuple:
  """Candidate sentiments allowed in a mood (a mood value in [0, 1]): the
  named moods' ranges, interpolated between them."""
  del params
  p = min(max(float(mood), 0.0), 1.0) * TOP
  i = min(int(p), TOP - 1)
  share = p - i
  (_, lo0, hi0), (_, lo1, hi1) = NAMED_MOODS[i], NAMED_MOODS[i + 1]
  return (lo0 + (lo1 - lo0) * share, hi0 + (hi1 - hi0) * share)


def kick_value(input_sentiment: float, candidate_sentiments: Sequence[float],
               params: MoodParams) -> float:
  """v: the input's sentiment averaged with the 75th percentile of the
  candidates' (the input's alone if there are none)."""
  if not len(candidate_sentiments):
    return float(input_sentiment)
  q75 = float(np.percentile(np.asarray(candidate_sentiments, float), 75))
  w = params.input_weight
  return w * float(input_sentiment) + (1 - w) * q75


def input_event(t: float, v: float, params: MoodParams) -> ForcingEvent:
  """The kick an input of value v (a probability of positive) gives."""
  return ForcingEvent(t=t, u=params.kick * (float(v) - 0.5), hours=0.0)


def trajectory(state: MoodState, t_end: float,
               events: Sequence[ForcingEvent], params: MoodParams,
               points: int = 200) -> tuple:
  """Times and mood values from state.t to t_end (for the plot)."""
  if t_end <= state.t:
    return [state.t], [mood_value(state, params)]
  times = [state.t + (t_end - state.t) * i / (points - 1)
           for i in range(points)]
  moods, current = [], state
  for t in times:
    current = advance(current, t, events, params)
    moods.append(mood_value(current, params))
  return times, moods
