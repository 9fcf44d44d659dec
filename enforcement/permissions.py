"""Who may do what with enforcement records in the portal (rows of :mod:`portal.permissions`).

Insurers look up only records they have filed on (:func:`enforcement.inquiry.lookup` narrows
by NAIC) and read only their own report; registrant data is never in what they see.
"""

from __future__ import annotations

from portal.permissions import Role, register

IIES_INQUIRY = register("iies_inquiry", Role.DMV, Role.INSURER, Role.ADMIN)
IIES_PROOF = register("iies_proof", Role.DMV, Role.ADMIN)
IIES_REPORTS = register("iies_reports", Role.DMV, Role.INSURER, Role.ADMIN)
IIES_STATEWIDE = register("iies_statewide", Role.DMV, Role.ADMIN)
