"""Tumblr itself: posts and their formats, the API client, scraping, and a
local API server. Nothing here knows about the model (no jax, gpt2 or
selector import): the bot's other rooms build on it.

  thread        the thread model: a post as an ordered list of turns
  npf, legacy   Neue Post Format and legacy API posts -> threads and back
  html_subset   the small HTML subset turns are written in
  fields        forgiving readers for the API's dict fields
  client        the API client with retries, rate limits and the daily cap
  post_day      the daily cap's day: the calendar day in US Eastern time
  credentials   the four OAuth1 keys, from a file or the environment
  scrape        a blog's posts to JSONL, resumable; tumblr-backup import
  server        a local Tumblr API server (tests, the demo, dry runs)
  errors        the user-mistake exception of this layer
"""
