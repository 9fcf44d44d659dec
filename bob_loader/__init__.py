"""State-side book-of-business loader and the insurer-side BoB export."""
