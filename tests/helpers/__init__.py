"""Code the tests share and that is not a fixture: tiny model builders, the tiny GGUF writer, server start and stop,
the CLI result type and the command list. Test modules import from here; they never import one another."""
