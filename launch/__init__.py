"""absl entry points: python -m launch.<name> --flags."""
