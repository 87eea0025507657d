#!/usr/bin/env bash
# test_serve_openai.sh — the official OpenAI Python client against `lmc
# serve` (tests/serve_openai.py): tool calls in and out (non-streamed and
# streamed, tool_choice required and named, the result sent back with
# role "tool"), and response_format json_schema / json_object on both
# endpoints, each output validated against its schema with jsonschema.
# The default model (models/kjv-llama) with a short Hermes-style chat
# template; greedy. Skipped when the openai package is not installed.
# Usage: test_serve_openai.sh PATH/TO/lmc
set -u
LMC="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
if ! python3 -c 'import openai' 2>/dev/null; then
  echo "test_serve_openai: skipped (python package openai not installed)"
  exit 0
fi
exec python3 tests/serve_openai.py "$LMC" models/kjv-llama
