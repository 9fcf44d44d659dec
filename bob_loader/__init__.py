"""State-side book-of-business loader and the insurer-side BoB export (SPEC §2).

``layout``    the 300-column field table (the one definition of the format)
``parser``    streaming reader; ``validate`` field rules; ``errors`` file errors and issues
``load``      ``olv bob load``: ``load_files`` and ``LoadOutcome``; ``store`` its SQL side
``bulk``      executemany / COPY writers; ``report`` the ``<file>.errors.txt`` reports
``lookup``    current records by VIN and per NAIC; ``contacts`` insurer contacts
``synth``     synthetic test data (the insurer-side export is ``service.bob_export``)
``models``    tables (migration 0002); ``settings`` ``OLV_BOB_*`` settings; ``cli`` commands
"""
