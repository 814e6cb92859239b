"""Raft consensus (pure core). Filled in by the Raft issue."""
