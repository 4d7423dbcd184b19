"""GPT-2 in Flax: model, tokenizer, weights, sampling, data and training.

Nothing in this package knows about tumblr (see ../bot for that).
"""
