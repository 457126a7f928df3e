"""Ready SoftHSM2 tokens with a test PKI, for tests, demos and trying qsign without hardware."""
