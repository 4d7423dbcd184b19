"""The bot: answer asks, reply, reblog and post on one blog. See bot/loop.py.

  python -m launch.run_bot --config=configs/bot.py --config.blog=NAME \
      --config.model=MODEL_DIR --config.heads=HEADS_DIR \
      --config.state=bot.db --once [--dry_run] [--model_server URL]

Credentials come from TUMBLR_CONSUMER_KEY, TUMBLR_CONSUMER_SECRET,
TUMBLR_OAUTH_TOKEN and TUMBLR_OAUTH_SECRET, or from the file named by
`credentials` (mode 0600). `--config=configs/bot.py:tiny` sizes sampling for
a tiny CPU model (tests, demos).
"""

import ml_collections

from configs import autoreviewer
from gpt2.sampling_params import MAX_STEPS, SamplingParams


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.blog = ""  # the bot's blog name (without .tumblr.com)
  c.model = ""  # generator: any directory gpt2.weights.load_model takes
  # Heads directory: selector/, sentiment/ and autoreviewer/, each optional;
  # "" runs without.
  c.heads = ""
  # The values the sentiment head was trained on, lowest and highest (VADER's
  # compound score by default); the bot maps them to P(positive).
  c.sentiment_scale = (-1.0, 1.0)
  c.state = "bot.db"  # SQLite state file
  c.trace = ""  # JSONL trace of every decision; default STATE.trace.jsonl
  c.tumblr_host = "https://api.tumblr.com"
  c.credentials = ""  # file with the four keys; "" reads the environment
  c.user_agent = "tumblr-gpt2-jax-bot/0.1"
  c.model_server = ""  # URL of launch.serve_model; "" runs the model here
  # A copy of the server's --token_file (mode 0600); "" for a server without
  # one (on this machine).
  c.model_token_file = ""
  c.feed_dir = "feed"  # feed.jsonl, feed.html, mood.png
  c.feed_live = False  # also write the feed in live runs (always in dry runs)
  c.seed = 0  # sampling and choice; each pass derives its own from the time
  # The pass's time (unix seconds); 0 reads the clock. Its sampling seeds,
  # its mood and its prompts' dates follow the time (the trace's `t`): a
  # `--once --dry_run --config.now=T` on a copy of the state runs a pass as
  # at T.
  c.now = 0.0

  # What a pass does.
  c.jobs = ml_collections.ConfigDict()
  c.jobs.asks = True
  c.jobs.notifications = True  # replies, reblogs with comments, mentions
  c.jobs.dashboard = True
  c.jobs.queue = True
  c.jobs.max_per_pass = 20  # answers/reblogs/posts written in one pass
  c.jobs.dashboard_per_pass = 5  # dashboard posts considered per pass
  # A job whose handling raised this many times (once a pass) is parked.
  c.jobs.max_errors = 3
  c.queue_target = 5  # keep this many original posts queued (at most 20:
  # the bot counts the queue's first page)
  c.queue_per_pass = 2  # original posts added per pass at most
  # Hours between queued posts, when the queue does not say (its posts'
  # scheduled_publish_time): original posts use the mood of that time.
  c.queue_interval_hours = 2.0
  c.tags = ()  # tags added to every post (after the generated ones)
  c.max_generated_tags = 5

  # Sampling.
  c.sampling = ml_collections.ConfigDict()
  c.sampling.n = 8  # candidates per job, in one sampler call
  c.sampling.more_rounds = 2  # extra rounds of n when the mood screen rejects
  c.sampling.min_survivors = 2  # ... so many that fewer than this survive
  # Beyond the context, a candidate is written in steps of a quarter of it,
  # each reading the prompt's start and the latest tokens; at most
  # `max_steps` (gpt2.sampling.sample). The original's: 1,600 tokens, 8 steps.
  # 0 takes the original's 1,600 where the model's context and `max_steps`
  # allow it, else the most they allow (said once at start); a number is
  # refused where the model cannot write that many.
  c.sampling.max_new_tokens = 0
  c.sampling.max_steps = MAX_STEPS
  # The original's rules: breakruns from T 0.9, top-p 0.95
  # (gpt2.sampling_params.SamplingParams.bot_defaults, the one place).
  rules = SamplingParams.bot_defaults()
  c.sampling.temperature = rules.temperature
  c.sampling.top_p = rules.top_p
  c.sampling.top_k = rules.top_k
  c.sampling.breakruns_tau = rules.breakruns_tau
  # Prompts per sampler call are padded to a power of two, at least this
  # many: few compiled programs however many jobs a pass has.
  c.sampling.min_prompts = 1
  # "float32" (the weights as loaded) or "int8": on a CPU, decoding from
  # weights quantized per output channel (gpt2.int8; docs/sampling.md).
  c.sampling.weights = "float32"

  # Choice.
  c.choice = ml_collections.ConfigDict()
  c.choice.min_chars = 10
  c.choice.epsilon = ml_collections.ConfigDict(
      dict(ask=0.1, reply=0.1, reblog=0.1, dashboard=0.05, original=0.2))
  c.choice.reblog_min_selector = 0.5  # dashboard: selector must say this ...
  c.choice.reblog_gate_prob = 0.5  # ... and a coin with this probability

  # Mood (bot/mood.py): a daily base among the named moods, and a bounded
  # response to each input that fades with tau1.
  c.mood = ml_collections.ConfigDict()
  c.mood.tau1_hours = 4.0
  c.mood.tau2_hours = 1.0
  c.mood.kick = 1.0  # x2's jump per unit of (input value - 0.5)
  c.mood.input_weight = 0.5  # the input's sentiment vs its candidates' 75th
  c.mood.bound = 1.0  # the response moves the mood at most this many names
  c.mood.base_weights = (1.0, 2.0, 4.0, 2.0, 1.0)  # odds of each daily base
  c.mood.transition_hours = 3.0  # yesterday's base to today's
  c.mood.plot_days = 3.0

  # The operator's lists (bot/lists.py): a file each, one entry a line, `#`
  # comments; "" = none.
  c.lists = ml_collections.ConfigDict(dict(
      avoid_users="", screened_users="", limited_users="", avoid_tags="",
      no_reblog_ids="", auto_accept_repliers="", drop_tags_containing=""))

  # Asks (bot/jobs/asks.py), as the original treated them.
  c.asks = ml_collections.ConfigDict()
  c.asks.max_read = 50  # asks read from the inbox per pass
  c.asks.min_words = 2  # fewer: skipped (CJK and emoji count 2; "!..." never)
  c.asks.max_images = 5  # more: skipped
  c.asks.review_chars = 10000  # longer: to review
  c.asks.max_pending_per_user = 2  # a user's waiting asks beyond: deleted
  c.asks.limited_hours = 12.0  # limited users: one answer per this many hours

  # Commands in asks: !follow, !unfollow, !mood.
  c.commands = ml_collections.ConfigDict()
  c.commands.enabled = True
  c.commands.mood_interactions = 5  # !mood lists this many up and down

  # Replies to the bot's posts and reblogs of them (bot/jobs/replies.py).
  c.replies = ml_collections.ConfigDict()
  # The original's cost: +1 a post in the thread, -0.1 a word (first 50),
  # +6 under 4 words, +10 for one word or none; over this, skipped.
  c.replies.max_cost = 20.0

  # Dashboard reblogs (bot/jobs/dashboard.py).
  c.dashboard = ml_collections.ConfigDict()
  c.dashboard.max_images = 10  # more: never reblogged
  c.dashboard.max_notes_without_comment = 1500  # this many, no comment: never
  # The generator's P(the bot comments next on this post) over its P on a
  # neutral post must reach this (the original's 0.75).
  c.dashboard.author_gate = 0.75

  # The API budget (the rate-limit headers): optional work is skipped when
  # fewer calls than these are left this hour, beyond `reserve_calls` kept
  # for answers.
  c.budget = ml_collections.ConfigDict()
  c.budget.reserve_calls = 10
  c.budget.dashboard_calls = 10
  c.budget.queue_calls = 5

  # Retention: an original post's losing candidates that the selector likes
  # are kept for later original posts (each used once), which then sample
  # no new ones when enough are kept.
  c.retention = ml_collections.ConfigDict()
  c.retention.enabled = True
  c.retention.min_selector = 0.45
  c.retention.max_age_days = 7.0

  # Text in images (bot/images.py): OCR'd into the prompt as
  # [image: ALT | text: ...]; fetched only from these hosts.
  c.images = ml_collections.ConfigDict()
  c.images.ocr = True
  c.images.allowed_hosts = "*.media.tumblr.com,media.tumblr.com"
  c.images.max_bytes = 10 * 2**20
  c.images.timeout_s = 15.0
  c.images.min_confidence = 0.95

  # Word list and review.
  c.word_list = ""  # one word or phrase a line; hits go to drafts
  c.review = ml_collections.ConfigDict()
  c.review.needs_tag = "bot review"  # put on drafts waiting for a person
  c.review.retry_tag = "bot retry"  # the operator: write a new answer
  c.review.accept_tag = "bot accept"  # the operator: publish as it is
  c.review.all = False  # every post waits for the operator (the console)
  c.review.max_retries = 3  # new candidates asked for at most this often
  # What others wrote that a post would carry (an ask, a quoted reply, a
  # reblogged thread) is screened like the bot's own words: naming an
  # avoided user, it is never answered; hitting the word list, "skip" (never
  # answered) or "draft" (answered into a draft for the operator); naming a
  # screened user, drafted.
  c.review.others_hits = "skip"

  # The autoreviewer (heads/autoreviewer, trained on the operator's review
  # decisions: configs/autoreviewer.py): its calibrated P(the operator turns
  # the post down) for the post the bot chose. A word-list hit under
  # accept_below is published anyway, over reject_above dropped, in between
  # reviewed; any other post over draft_above waits for review. Ordered
  # 0 <= accept_below <= draft_above <= reject_above <= 1 (see
  # selector/autoreview.py). Without an autoreviewer, nothing changes.
  c.autoreview = autoreviewer.cutoffs()

  # Tumblr client.
  c.client = ml_collections.ConfigDict()
  c.client.timeout_s = 30.0
  c.client.max_retries = 4
  c.client.backoff_s = 2.0
  c.client.max_wait_s = 900.0  # longest 429 reset waited for in a pass
  # Requests sent in any minute at most: Tumblr allows 300 per IP address
  # and sends no header counting them (a margin for other tools).
  c.client.calls_per_minute = 250
  c.client.daily_cap = 250
  c.client.slowdown_below = 25  # posts left today at which posting spaces out
  c.client.answers_only_below = 5  # posts left today at which only answers go

  # Testing the crash recovery: a point of bot.jobs.base.CRASH_POINTS
  # ("after_plan", "before_send", "after_send", "after_accept"), or
  # "POINT:KIND" (e.g. "after_send:reply"), kills the process (SIGKILL) at
  # that point of the first job (of that kind) that reaches it.
  c.crash_at = ""

  if arg == "tiny":
    c.sampling.n = 6
    c.sampling.max_new_tokens = 48
    c.sampling.min_prompts = 4  # one compiled program for 1 to 4 jobs
    c.choice.min_chars = 3
  elif arg:
    raise ValueError(f"configs/bot.py knows no variant {arg!r} (try tiny)")
  return c
