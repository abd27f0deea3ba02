"""Entry point for `python -m llmscope`; it only hands over to the CLI."""

from llmscope.cli import main

if __name__ == "__main__":
    main()
