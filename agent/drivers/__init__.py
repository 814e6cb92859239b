"""Trio drivers: each owns one pure core and connects it to sockets and the clock."""
