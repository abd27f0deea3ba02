"""python -m llmscope: the same entry point as the console script."""

from llmscope.entry import main

if __name__ == "__main__":
    main()
