"""Document signatures: PAdES on PDFs and CAdES detached for any file, over token keys."""
