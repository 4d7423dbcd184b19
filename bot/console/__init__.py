"""The operator's console: live writing, the review queue and the bot's
history in a web page (`python -m launch.console`). `core` does the work;
`app` is the Gradio page."""
