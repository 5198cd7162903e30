"""toylab: an example trainer package built on the sweep orchestrator's public trainer API (orchestrator.api)."""
