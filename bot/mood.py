"""The bot's mood: a two-state linear system forced by sentiment, stepped exactly.

As in the original, the mood is a slow variable `x1` driven by a faster one
`x2`, which is in turn driven by a forcing `u` made of the sentiment of what
users send and of what the bot writes:

    x1' = -x1 / tau1 + x2
    x2' = -x2 / tau2 + k * u

(time in hours; tau1 12 h and tau2 1 h by default). The mood is
`sigmoid(x1 + logit(baseline))`, where the baseline is a probability that
varies from day to day; with no forcing the mood relaxes to the day's
baseline. `u` is piecewise constant: each event (an ask read, a post
written) holds `weight * (logit(sentiment) - logit(baseline))` for
`event_hours`, and overlapping events add.

Between breakpoints of `u` the system is solved in closed form (the matrix
exponential of a 2x2 triangular system), so the state after an interval does
not depend on how the interval is cut: stepping a day in one go or in a
thousand pieces gives the same numbers. The mood maps to a window of
allowed candidate sentiments around it (`sentiment_range`).
"""

import dataclasses
import datetime
import hashlib
import math
from typing import Iterable, Sequence

_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class MoodParams:
  """Constants of the mood system (config keys `mood.*`)."""
  tau1_hours: float = 12.0
  tau2_hours: float = 1.0
  # Gain of the forcing on x2 (per hour).
  k: float = 1.0
  # The mood every day relaxes to, as a probability of positive sentiment.
  baseline: float = 0.6
  # Day-to-day spread of the baseline in logit units (0: the same every day).
  daily_jitter: float = 0.5
  # How long one event forces the system, and how much users and the bot
  # count relative to each other.
  event_hours: float = 1.0
  user_weight: float = 1.0
  bot_weight: float = 0.5
  # Allowed sentiment window: [mood - width, mood + width] clipped to [0, 1].
  range_width: float = 0.45

  @classmethod
  def from_config(cls, cfg) -> "MoodParams":
    """Builds the params from a mapping (a ConfigDict or dict); unknown keys are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: float(v) for k, v in dict(cfg).items() if k in names})


@dataclasses.dataclass(frozen=True)
class MoodState:
  """The system's state at unix time `t` (seconds)."""
  t: float
  x1: float = 0.0
  x2: float = 0.0


@dataclasses.dataclass(frozen=True)
class ForcingEvent:
  """`u` held constant over [t, t + hours * 3600)."""
  t: float
  u: float
  hours: float


def logit(p: float) -> float:
  p = min(max(p, _EPS), 1 - _EPS)
  return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
  if x >= 0:
    return 1 / (1 + math.exp(-x))
  e = math.exp(x)
  return e / (1 + e)


def _relative_decay(a: float, b: float, t: float) -> float:
  """(exp(-b t) - exp(-a t)) / (a - b), stable when a is close to b."""
  d = a - b
  if abs(d * t) < 1e-9:
    return t * math.exp(-a * t)
  return math.exp(-a * t) * math.expm1(d * t) / d


def step(x1: float, x2: float, u: float, hours: float,
         params: MoodParams) -> tuple:
  """Exact solution of the system after `hours` with constant forcing `u`.

  With a = 1/tau1, b = 1/tau2 the steady states are x2* = k u / b and
  x1* = x2* / a; the deviations decay as y(t) = y0 e^{-at} +
  z0 (e^{-bt} - e^{-at}) / (a - b), z(t) = z0 e^{-bt}.
  """
  if hours < 0:
    raise ValueError(f"cannot step the mood backwards ({hours} h)")
  a, b = 1 / params.tau1_hours, 1 / params.tau2_hours
  x2_star = params.k * u / b
  x1_star = x2_star / a
  y0, z0 = x1 - x1_star, x2 - x2_star
  y = y0 * math.exp(-a * hours) + z0 * _relative_decay(a, b, hours)
  z = z0 * math.exp(-b * hours)
  return x1_star + y, x2_star + z


def forcing_at(events: Sequence[ForcingEvent], t: float) -> float:
  """The piecewise-constant u at time t (events starting at t count)."""
  return sum(e.u for e in events if e.t <= t < e.t + e.hours * 3600)


def advance(state: MoodState, t_end: float, events: Iterable[ForcingEvent],
            params: MoodParams) -> MoodState:
  """Steps `state` to `t_end` exactly, cutting at every change of u."""
  if t_end <= state.t:
    return state
  events = [e for e in events
            if e.t < t_end and e.t + e.hours * 3600 > state.t]
  cuts = {state.t, t_end}
  for e in events:
    for c in (e.t, e.t + e.hours * 3600):
      if state.t < c < t_end:
        cuts.add(c)
  cuts = sorted(cuts)
  x1, x2 = state.x1, state.x2
  for t0, t1 in zip(cuts[:-1], cuts[1:]):
    x1, x2 = step(x1, x2, forcing_at(events, t0), (t1 - t0) / 3600, params)
  return MoodState(t=t_end, x1=x1, x2=x2)


def daily_baseline(t: float, params: MoodParams) -> float:
  """The day's baseline mood: `baseline` moved by a jitter fixed per UTC day.

  The jitter comes from a hash of the date, so every process (and every
  restart) agrees on today's baseline without storing it.
  """
  day = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).date()
  digest = hashlib.sha256(day.isoformat().encode()).digest()
  uniform = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
  # Roughly a standard normal draw (the logistic with the normal's variance).
  normal = logit(uniform) * math.sqrt(3) / math.pi
  return sigmoid(logit(params.baseline) + params.daily_jitter * normal)


def mood_value(state: MoodState, params: MoodParams) -> float:
  """The mood as a probability: sigmoid(x1 + logit(baseline of the day))."""
  return sigmoid(state.x1 + logit(daily_baseline(state.t, params)))


def sentiment_event(t: float, sentiment: float, source: str,
                    params: MoodParams) -> ForcingEvent:
  """The forcing from one text's sentiment (a probability of positive).

  `source` is "user" (what someone sent) or "bot" (what the bot wrote).
  """
  weight = {"user": params.user_weight, "bot": params.bot_weight}[source]
  u = weight * (logit(sentiment) - logit(daily_baseline(t, params)))
  return ForcingEvent(t=t, u=u, hours=params.event_hours)


def sentiment_range(mood: float, params: MoodParams) -> tuple:
  """Candidate sentiments the bot allows itself in this mood."""
  return (max(0.0, mood - params.range_width),
          min(1.0, mood + params.range_width))


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
