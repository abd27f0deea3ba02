"""The commands of the llmscope app, one module per family; importing a module registers its commands on
llmscope.cli.app.app. Each command reads settings -> loads -> runs -> shows, and nothing more."""
