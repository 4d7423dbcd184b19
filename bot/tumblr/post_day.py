"""Tumblr's posting day: the calendar day in US Eastern time.

The daily post cap resets at midnight in New York, not 24 hours after the
first post nor at midnight UTC: the API docs' `/user/limits` example gives
`reset_at` 1670043600, 05:00 UTC (midnight EST), and the original bot
(nostalgebraist-autoresponder, its post limiter) counted posts by that day.
So the day begins at 05:00 UTC in winter and at 04:00 UTC in summer, and a
day that changes the clocks is 23 or 25 hours long.
"""

import datetime
import zoneinfo

EASTERN = zoneinfo.ZoneInfo("America/New_York")


def day_bounds(t: float) -> tuple:
  """(start, end) as unix times of the US Eastern calendar day holding `t`."""
  day = datetime.datetime.fromtimestamp(t, EASTERN).date()
  start = datetime.datetime.combine(day, datetime.time(), EASTERN)
  end = datetime.datetime.combine(day + datetime.timedelta(days=1),
                                  datetime.time(), EASTERN)
  return start.timestamp(), end.timestamp()
