"""Atomic file writes and file locks: the primitives every stage writes with."""
