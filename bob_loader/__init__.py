"""The book of business on the state side: loading, intake, look-ups (SPEC §2).

The file format itself (layout, parser, field rules, issues, capped line reading) is the
core's :mod:`olv.bob`, shared with the insurer's service.

``load``      ``olv bob load``: ``load_files`` and ``LoadOutcome``; ``store`` its SQL side
``bulk``      executemany / COPY writers; ``report`` the error reports
``intake``    ``olv bob watch``: pickup rounds and processing; ``intake_watch`` the loop, the
              load worker and the one-watcher lock; ``intake_claims`` the
              files on disk (accounts, complete uploads, claims); ``intake_binding`` account
              NAIC bindings; ``intake_report`` the intake's own reports; ``intake_notify`` and
              ``mail`` the summary e-mail; ``intake_settings`` its settings; ``sftp`` push/fetch
``lookup``    current records by VIN and per NAIC; ``contacts`` insurer contacts
``synth``     synthetic test data
``models``    tables (migration 0002); ``settings`` ``OLV_BOB_*`` settings; ``cli`` commands

The insurer-side export (``olv bob export``) reads the insurer store and so lives in
``service.bob_export``; the composition root (``olv.cli``) adds it to this package's command
group: this package never imports ``service``.
"""
