"""The command-line plumbing: the Typer app (app), shared options and error mapping (kit), --batch files (batch),
the assembled app (main) and docs/cli.md (reference). Top layer: it may import every package below it."""
