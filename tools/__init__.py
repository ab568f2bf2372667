"""Command-line tools: lsgpu (list devices), bench (benchmarks); run each with `python -m tools.NAME`."""
