"""Peer methods run side by side with ours, each in its own environment (never package dependencies)."""
