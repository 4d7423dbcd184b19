"""Everything tumblr: posts, text format, client, state, mood and the bot loop."""
