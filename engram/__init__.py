"""Engram: long-term, per-user memory for chatbots (settings, shared clients, CLI)."""
