"""PKCS#11 modules, slots, tokens, keys and sessions; PIN state and error mapping."""
