"""Latency measurement on host, Android and iOS, zero-shot evaluation and the latency-accuracy frontier.

One idea per module: `stats` (summary numbers), `records` (the JSON-lines record and its schema),
`artifacts` (what is measured), `host` / `android` / `ios` (targets), `parsers` (on-device runners'
output), `evaluate` (zero-shot accuracy), `frontier` (table and plot), `sweep` (export, measure and
evaluate every variant and scheme for the frontier).
"""
