"""The mood system against its closed form and an independent integrator."""

import math

import numpy as np
import pytest

from bot import mood

T0 = 1_700_000_000.0  # a fixed unix time
P = mood.MoodParams(tau1_hours=12.0, tau2_hours=1.0, k=0.7, daily_jitter=0.0)


def closed_form_step(t_hours, u, p):
  """x1, x2 from rest under a constant input u switched on at t = 0."""
  t1, t2 = p.tau1_hours, p.tau2_hours
  x2 = p.k * u * t2 * (1 - math.exp(-t_hours / t2))
  x1 = p.k * u * t1 * t2 * (
      1 - (t1 * math.exp(-t_hours / t1) - t2 * math.exp(-t_hours / t2))
      / (t1 - t2))
  return x1, x2


def rk4(x, f, hours, n):
  h = hours / n
  for _ in range(n):
    k1 = f(x)
    k2 = f(x + h / 2 * k1)
    k3 = f(x + h / 2 * k2)
    k4 = f(x + h * k3)
    x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
  return x


@pytest.mark.parametrize("hours", [0.25, 1.0, 3.0, 12.0, 48.0])
def test_step_input_matches_closed_form(hours):
  u = 1.3
  step_on = [mood.ForcingEvent(t=T0, u=u, hours=1000.0)]
  state = mood.advance(mood.MoodState(t=T0), T0 + hours * 3600, step_on, P)
  x1, x2 = closed_form_step(hours, u, P)
  assert state.x1 == pytest.approx(x1, rel=1e-12, abs=1e-12)
  assert state.x2 == pytest.approx(x2, rel=1e-12, abs=1e-12)
  assert state.x1 != 0.0


def test_stepping_in_pieces_equals_one_step():
  u = -0.8
  events = [mood.ForcingEvent(t=T0, u=u, hours=1000.0)]
  whole = mood.advance(mood.MoodState(t=T0), T0 + 20 * 3600, events, P)
  rng = np.random.default_rng(0)
  cuts = np.sort(rng.uniform(T0, T0 + 20 * 3600, size=37))
  state = mood.MoodState(t=T0)
  for c in list(cuts) + [T0 + 20 * 3600]:
    state = mood.advance(state, float(c), events, P)
  assert state.x1 == pytest.approx(whole.x1, rel=1e-10)
  assert state.x2 == pytest.approx(whole.x2, rel=1e-10)


def test_overlapping_events_match_numerical_integration():
  events = [mood.ForcingEvent(t=T0 + 1800, u=2.0, hours=1.5),
            mood.ForcingEvent(t=T0 + 3600, u=-1.0, hours=4.0)]
  a, b = 1 / P.tau1_hours, 1 / P.tau2_hours
  x = np.array([0.3, -0.1])
  start = mood.MoodState(t=T0, x1=0.3, x2=-0.1)
  # Integrate each constant-input stretch with fine RK4 steps.
  cuts = [0.0, 0.5, 1.0, 2.0, 5.0, 9.0]
  for h0, h1 in zip(cuts[:-1], cuts[1:]):
    u = mood.forcing_at(events, T0 + h0 * 3600)
    f = lambda s, u=u: np.array([-a * s[0] + s[1], -b * s[1] + P.k * u])
    x = rk4(x, f, h1 - h0, 2000)
  state = mood.advance(start, T0 + 9 * 3600, events, P)
  assert state.x1 == pytest.approx(x[0], abs=1e-9)
  assert state.x2 == pytest.approx(x[1], abs=1e-9)


def test_equal_time_constants_are_handled():
  p = mood.MoodParams(tau1_hours=2.0, tau2_hours=2.0, k=1.0)
  x1, x2 = mood.step(0.0, 1.0, 0.0, 3.0, p)
  # y' = -y/2 + z, z = e^{-t/2}: y = t e^{-t/2}.
  assert x1 == pytest.approx(3.0 * math.exp(-1.5), rel=1e-9)
  assert x2 == pytest.approx(math.exp(-1.5), rel=1e-12)


def test_mood_relaxes_to_the_daily_baseline_and_sets_the_range():
  p = mood.MoodParams(baseline=0.7, daily_jitter=0.0, range_width=0.3)
  excited = mood.MoodState(t=T0, x1=2.0, x2=0.5)
  assert mood.mood_value(excited, p) > 0.9
  later = mood.advance(excited, T0 + 30 * 24 * 3600, [], p)
  assert mood.mood_value(later, p) == pytest.approx(0.7, abs=1e-6)
  lo, hi = mood.sentiment_range(0.9, p)
  assert (lo, hi) == (pytest.approx(0.6), 1.0)


def test_sad_input_lowers_the_mood():
  p = mood.MoodParams(daily_jitter=0.0)
  sad = mood.sentiment_event(T0, 0.05, "user", p)
  assert sad.u < 0
  state = mood.advance(mood.MoodState(t=T0), T0 + 3 * 3600, [sad], p)
  assert mood.mood_value(state, p) < p.baseline - 0.05


def test_daily_baseline_is_fixed_per_day_and_varies_between_days():
  p = mood.MoodParams(baseline=0.6, daily_jitter=0.5)
  day = 86400 * (int(T0) // 86400)
  same = {mood.daily_baseline(day + h * 3600, p) for h in range(24)}
  assert len(same) == 1
  days = {round(mood.daily_baseline(day + d * 86400, p), 6)
          for d in range(10)}
  assert len(days) > 5
  assert all(0 < b < 1 for b in days)
