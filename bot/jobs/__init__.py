"""The bot's job kinds, one module each: how its jobs are found, its
prompt, and how its answer is posted (see base.JobKind).

  asks        asks in the inbox, answered in place
  replies     replies to the bot's posts, and reblogs of them with comments
  dashboard   posts of followed blogs, reblogged with a comment
  originals   original posts that keep the queue topped up
"""

from bot.jobs import asks, dashboard, originals, replies

# Job kinds by name, in the order a pass works on them.
KINDS = {k.name: k for k in (asks.ASK, replies.REPLY, replies.REBLOG,
                             dashboard.DASHBOARD, originals.ORIGINAL)}
# Where new jobs come from, in the order a pass looks: (name, discover, the
# config key under `budget` of the API calls it needs, None if it is not
# optional). Optional ones are skipped when the hour's budget runs low.
DISCOVERERS = (("asks", asks.discover, None),
               ("notifications", replies.discover, None),
               ("dashboard", dashboard.discover, "dashboard_calls"),
               ("queue", originals.discover, "queue_calls"))
