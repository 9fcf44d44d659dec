"""The state query portal (SPEC §5): officers, courts and DMV systems verify coverage.

Module map:

* ``app.py``            ``create_app`` — routers, static files, templates, lifespan resources
* ``settings.py``       ``OLV_PORTAL_*`` settings
* ``deps.py``           request dependencies: DB session, current principal, role checks
* ``errors.py``         the one JSON error shape and its exception handlers
* ``models.py``         tables (migration ``0003``)
* ``routing.py``        SPEC §5 steps 1-5: one function, one result object (API and pages)
* ``verdicts.py``       from the insurers' answers to that result (the verdict rules)
* ``reasons.py``        reason codes as 00200809 names with descriptions (numbers beside)
* ``insurer_client.py`` pooled per-insurer HTTP clients behind a transport seam
* ``soap_wire.py``      SOAP requests in either IICMVA version; answers checked against our XSD
* ``schemas.py``        the API's pydantic types
* ``querylog.py``       batched writes of the query log and the insurer-call log
* ``registry.py``       the insurer registry;  ``registrations.py`` plate → VIN import
* ``users.py``          account operations (add, unlock, disable, enable, reset the second
                        factor), shared by ``olv users`` and the admin pages
* ``lockout.py``        counting failed sign-ins (atomically, before the check) and the
                        sign-in rate limits
* ``security_log.py``   the security log and every event name it records
* ``secret_key.py``     ``OLV_PORTAL_SECRET_KEY``: TOTP secrets encrypted at rest, keyed name hashes
* ``passwords.py``, ``tokens.py``, ``sessions.py``, ``totp.py``, ``ratelimit.py``, ``cache.py``
* ``onboarding.py``     ``olv insurers check``: the onboarding scenario set
* ``cli.py``            the ``olv`` sub-commands of the portal
* ``routes/``           one router module per concern; ``templates/`` and ``static/`` for pages

The portal imports the IICMVA vocabulary from ``olv.iicmva`` and the book of business through
``bob_loader.lookup``; it never imports the insurer service (``service/``).
"""
