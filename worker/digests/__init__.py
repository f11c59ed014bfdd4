"""Digests: when each reader's period ends, who gets what, and rendering once per shared body."""
