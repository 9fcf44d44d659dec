"""Insurance ID cards that cannot be forged (SPEC §7; NY 15 NYCRR Part 32, NYAIP FS-75).

Used by both sides: an issuer (agent, broker, insurer) makes a key and prints cards with
``olv cards keygen|issue``; the state checks them (``olv cards verify``, the portal's
``POST /api/v1/cards/verify``) against its registry of issuers, which lives with the portal.

* :mod:`idcards.card`      the card's fields and their compact CBOR form
* :mod:`idcards.cose`      COSE_Sign1 (RFC 9052) with Ed25519, on cbor2 + cryptography
* :mod:`idcards.armour`    the signed bytes as the decimal digits printed in the PDF-417 symbol
* :mod:`idcards.keys`      the issuer's key file: Ed25519 sealed under a PIN (scrypt, AES-GCM)
* :mod:`idcards.barcode`   PDF-417 symbols (pdf417gen) at a module size readers can resolve
* :mod:`idcards.templates` what a state's card shows and in which order (NY Part 32; IICMVA)
* :mod:`idcards.pdf`       the printed cards (reportlab)
* :mod:`idcards.issue`     cards from a CSV or from the insurer's policy store, and their log
* :mod:`idcards.decode`    barcode text from a photo, scan or PDF (zxing-cpp), hostile-input safe
* :mod:`idcards.verify`    the answer for one barcode, given a way to look keys up
"""
