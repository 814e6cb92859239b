"""SWIM membership with Lifeguard (pure core). Filled in by the gossip issue."""
