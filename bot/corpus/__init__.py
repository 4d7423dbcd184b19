"""Corpora: training documents from scraped posts, Shakespeare's plays as
tumblr threads for the demo, and the heads' training examples."""
