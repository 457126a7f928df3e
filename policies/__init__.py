"""Roles, templates, approval rules and certificate, algorithm and PIN policy."""
