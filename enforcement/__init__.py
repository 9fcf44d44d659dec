"""Insurance enforcement (SPEC §6): registrations with registrants, insurer transactions,
coverage, cases, letters."""
