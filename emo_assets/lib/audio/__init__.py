"""Bytes -> 16 kHz mono samples: scan the landing zone, decode, resample (no model, no store)."""
