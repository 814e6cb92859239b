"""The server port (8300): one listener, streams told apart by their first byte."""
