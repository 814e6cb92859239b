"""The catalog: state store, commands, queries and DNS answers (pure core)."""
