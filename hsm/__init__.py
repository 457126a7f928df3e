"""Central HSM bulk sealing."""
