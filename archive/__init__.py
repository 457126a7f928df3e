"""Signed-document store, request and job records, and the hash-chained audit log."""
