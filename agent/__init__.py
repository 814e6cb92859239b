"""The agent: the only room that touches sockets, disk, the clock and config."""
