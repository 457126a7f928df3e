"""Signature verification for auditors: the CLI, the HTTP service and its reports."""
