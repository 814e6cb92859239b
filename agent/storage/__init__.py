"""Durable storage owned by the agent: the Raft log and hard state."""
