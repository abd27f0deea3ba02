"""The commands of the llmscope app, one module per command named after it (next-token in next_token.py; tokenize in
tokenize_text.py, so as not to shadow the standard library's tokenize); importing a module registers its command on
llmscope.cli.app.app. Modules prefixed `_` hold what several commands share (the --endpoint glue, the TEXT/--file
options) and no command. Each command reads settings -> loads -> runs -> shows, and nothing more."""
