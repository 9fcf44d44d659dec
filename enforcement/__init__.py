"""Insurance enforcement (SPEC §6): every registration monitored, the NY IIES model."""
