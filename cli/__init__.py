"""The command line: `murmur agent` and HTTP clients for the rest."""
