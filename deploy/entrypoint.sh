#!/bin/sh
# The image's entrypoint: `IMAGE [COMMAND] [FLAG...]`.
#
# COMMAND names a launch module (run_bot, serve_model, console, demo, ...):
# `IMAGE serve_model --port=8765` runs `python -m launch.serve_model
# --port=8765`. Flags alone run the bot (`IMAGE --once`). run_bot,
# serve_model and console get the container's config
# (deploy/container_config.py: the state, the feed and the models under
# /data, the credentials at /run/secrets/tumblr_credentials) unless a
# --config is given. Anything else runs as it is (`IMAGE python3 -V`).
set -e
case "${1:-}" in
  ""|-*) set -- run_bot "$@" ;;
esac
if ! python -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("launch." + sys.argv[1]) is None)' \
    "$1" 2>/dev/null; then
  exec "$@"
fi
module="$1"
shift
case "$module" in
  run_bot|serve_model|console)
    for arg in "$@"; do
      case "$arg" in
        --config|--config=*) exec python -m "launch.$module" "$@" ;;
      esac
    done
    exec python -m "launch.$module" --config=/app/deploy/container_config.py \
      "$@" ;;
esac
exec python -m "launch.$module" "$@"
