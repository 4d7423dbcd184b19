"""The mood: its named daily bases, a bounded response to inputs that fades,
and the exact solution against closed forms and an independent integrator."""

import datetime
import math

import numpy as np
import pytest

from bot import mood

P = mood.MoodParams()
# A noon, so the day's base is not in its morning transition.
NOON = datetime.datetime(2026, 5, 4, 12, tzinfo=datetime.timezone.utc
                         ).timestamp()


def rk4(x, f, hours, n):
  h = hours / n
  for _ in range(n):
    k1 = f(x)
    k2 = f(x + h / 2 * k1)
    k3 = f(x + h / 2 * k2)
    k4 = f(x + h * k3)
    x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
  return x


def test_one_kick_follows_the_closed_form():
  a, b = 1 / P.tau1_hours, 1 / P.tau2_hours
  kick = mood.input_event(NOON, 1.0, P)
  assert kick.u == pytest.approx(0.5 * P.kick)
  for hours in (0.25, 1.0, 1.85, 6.0, 24.0):
    state = mood.advance(mood.MoodState(t=NOON - 1), NOON + hours * 3600,
                         [kick], P)
    want = kick.u * (math.exp(-b * hours) - math.exp(-a * hours)) / (a - b)
    assert state.x1 == pytest.approx(want, rel=1e-9)
    assert state.x2 == pytest.approx(kick.u * math.exp(-b * hours),
                                     rel=1e-9)


def test_cutting_the_interval_does_not_change_the_state():
  events = [mood.input_event(NOON + 600 * i, v, P)
            for i, v in enumerate([0.9, 0.1, 0.8, 1.0, 0.3])]
  end = NOON + 20 * 3600
  whole = mood.advance(mood.MoodState(t=NOON), end, events, P)
  cuts = np.sort(np.random.default_rng(0).uniform(NOON, end, size=37))
  state = mood.MoodState(t=NOON)
  for c in list(cuts) + [end]:
    state = mood.advance(state, float(c), events, P)
  assert state.x1 == pytest.approx(whole.x1, rel=1e-10)
  assert state.x2 == pytest.approx(whole.x2, rel=1e-10)


def test_kicks_and_older_held_forcings_match_numerical_integration():
  events = [mood.ForcingEvent(t=NOON + 1800, u=0.6, hours=1.5),  # older kind
            mood.input_event(NOON + 3600, 0.95, P),
            mood.input_event(NOON + 7200, 0.05, P)]
  a, b = 1 / P.tau1_hours, 1 / P.tau2_hours
  x = np.array([0.3, -0.1])
  for h0, h1 in ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 9.0)):
    u = mood.forcing_at(events, NOON + h0 * 3600)
    f = lambda s, u=u: np.array([-a * s[0] + s[1], -b * s[1] + u])
    x = rk4(x, f, h1 - h0, 4000)
    x[1] += sum(e.u for e in events if e.hours == 0
                and e.t == NOON + h1 * 3600)
  state = mood.advance(mood.MoodState(t=NOON, x1=0.3, x2=-0.1),
                       NOON + 9 * 3600, events, P)
  assert state.x1 == pytest.approx(x[0], abs=1e-9)
  assert state.x2 == pytest.approx(x[1], abs=1e-9)


def test_a_burst_of_twenty_glowing_asks_moves_the_mood_a_bounded_amount():
  base = mood.daily_base(NOON, P)
  burst = [mood.input_event(NOON + 180 * i, mood.kick_value(1.0, [1.0], P), P)
           for i in range(20)]
  start = mood.MoodState(t=NOON - 1)
  moves = []
  for minutes in range(0, 12 * 60, 10):
    state = mood.advance(start, NOON + minutes * 60, burst, P)
    moves.append(mood.position(state, P) - mood.daily_base(state.t, P))
  assert max(moves) <= P.bound + 1e-9  # at most one named mood up
  assert max(moves) > 0.9 * P.bound  # and it does move
  # A day without input later, it is back within 0.05 of the base.
  later = mood.advance(start, NOON + 24 * 3600 + 3 * 3600, burst, P)
  day_base = mood.daily_base(later.t, P) / mood.TOP
  assert abs(mood.mood_value(later, P) - day_base) <= 0.05
  assert abs(mood.mood_value(mood.MoodState(t=NOON), P) - base / mood.TOP
             ) < 1e-12


def test_one_sad_ask_lowers_the_mood():
  state = mood.advance(mood.MoodState(t=NOON - 1), NOON + 2 * 3600,
                       [mood.input_event(NOON, 0.05, P)], P)
  assert mood.position(state, P) < mood.daily_base(state.t, P) - 0.1


def test_the_daily_base_follows_the_named_moods():
  days = [NOON + d * 86400 for d in range(400)]
  bases = [mood.daily_base(t, P) for t in days]
  assert all(b == int(b) for b in bases)  # a named mood at noon
  counts = np.bincount([int(b) for b in bases], minlength=5) / len(bases)
  expected = np.asarray(P.base_weights) / sum(P.base_weights)
  assert np.allclose(counts, expected, atol=0.06)
  assert mood.base_name(NOON, P) == mood.NAMED_MOODS[int(bases[0])][0]
  # The same all afternoon, and reached from yesterday's over the morning.
  today = mood.daily_base(NOON, P)
  assert mood.daily_base(NOON + 6 * 3600, P) == today
  midnight = NOON - 12 * 3600
  yesterday = mood.daily_base(midnight - 3600, P)
  assert mood.daily_base(midnight, P) == pytest.approx(yesterday)
  half = mood.daily_base(midnight + 1.5 * 3600, P)
  assert half == pytest.approx((yesterday + today) / 2)


def test_named_moods_set_the_allowed_sentiments():
  for i, (_, lo, hi) in enumerate(mood.NAMED_MOODS):
    assert mood.sentiment_range(i / mood.TOP) == (pytest.approx(lo),
                                                  pytest.approx(hi))
  lo, hi = mood.sentiment_range(2.5 / mood.TOP)  # between meh and non-sad
  assert (lo, hi) == (pytest.approx(0.03), pytest.approx(0.85))


def test_an_input_is_valued_with_its_candidates():
  # The 75th percentile of the candidates, averaged with the input.
  assert mood.kick_value(0.2, [0.1, 0.5, 0.9, 0.7], P) == pytest.approx(
      0.5 * 0.2 + 0.5 * 0.75)
  assert mood.kick_value(0.3, [], P) == 0.3
