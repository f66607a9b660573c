"""Shared case notes: a CRDT document per consult, edited live by both parties."""
