"""Signed-document store, request and job records, and the hash-chained audit log.

Callers use ``archive.api.Archive`` (see that module); ``qsign archive`` (``archive.cli``) verifies,
backs up, restores, prunes and searches an archive. Configuration: ``archive.settings``.
"""
