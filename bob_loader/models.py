"""State-side book-of-business storage (tables added by the loader's own migration)."""
