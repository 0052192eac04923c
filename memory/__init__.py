"""Engram's memory store: versioned per-user memories in Qdrant."""

from engram.memory.store import ApplyReport, MemoryStore, PlannedOp, normalize_text

__all__ = ["ApplyReport", "MemoryStore", "PlannedOp", "normalize_text"]
