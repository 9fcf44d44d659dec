"""The book-of-business file format (SPEC §2), shared by both sides: the insurer's service
writes and imports it, the state's loader reads it.

``layout``    the 300-column field table (the one definition of the format)
``parser``    the streaming reader; ``validate`` the field rules
``errors``    a file refused as a whole (``BobFileError``) and per-record ``Issue`` values
``lines``     line reading with a length cap, for every reader of BoB, CSV or VIN input
"""
