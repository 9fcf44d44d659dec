"""Every code of the enforcement model, in one place: what IIES names activities, case states
and reasons (the NY IIES resource guide's tables), the transaction types and dispositions of
34.9 reporting, OLV's edit codes (one per rule of SPEC §6) and the file-level acknowledgement
codes. Code letters are the guide's; the descriptions are short paraphrases.
"""

from __future__ import annotations

from typing import Final

# --- Insurer transactions (34.9) -------------------------------------------------------------

TRANSACTION_TYPES: Final = {
    "NBS": "new business: coverage began (also the confirming answer to an MVF)",
    "REI": "reinstatement: coverage restored after a cancellation",
    "XLC": "cancellation: coverage ended on the effective date",
    "REP": "rescinds a posted NBS or REI of the same insurer and effective date",
    "REC": "rescinds a posted XLC of the same insurer and effective date",
    "NIS": "no insurance: the negative answer to an MVF (carries its tracking number)",
}

DISPOSITIONS: Final = {
    "H": "matched to a registration (criteria H1-H4)",
    "R": "resolved to a registration by exception matching",
    "E": "edit or sequence error: not posted (see the codes)",
    "U": "unresolved: no registration found",
}

MATCH_RULES: Final = {
    "H1": "VIN and plate",
    "H2": "VIN and driver's license number (individual) or FEIN (organization)",
    "H3": "VIN, first 3 letters of the name and date of birth (individual)",
    "H4": "VIN and first 3 letters of the name",
    "R": "5/3/1 letters of the name parts, DOB or zip, and one registration VIN >= 70 % alike",
}

# --- Edit codes: one per rule; a transaction with any of them is disposition E -----------------

EDITS: Final = {
    # required elements per type
    "E01": "txn_id is missing or longer than 40 characters",
    "E02": "type is not one of NBS, REI, XLC, REP, REC, NIS",
    "E03": "naic is missing or not 5 digits",
    "E04": "naic is not the sender's",
    "E05": "effective_date is missing",
    "E06": "policy_number is missing",
    "E07": "policy_type is missing",
    "E08": "entity_type is missing",
    "E09": "last_name (or the organization's name) is missing",
    "E10": "first_name is missing for an individual",
    "E11": "dob is missing for an individual",
    "E12": "vin is missing",
    "E13": "vehicle_year is missing",
    "E14": "make is missing",
    "E15": "tracking_number is missing: an NIS answers an MVF and must carry its number",
    # formats and values
    "E20": "lower-case letters: all letters must be upper case",
    "E21": "effective_date is not a real date (YYYY-MM-DD)",
    "E22": "effective_date is a default or out of range (before 1950 or over 60 days ahead)",
    "E23": "dob is not a real date (YYYY-MM-DD)",
    "E24": "dob is a default or not of a living person (in the future or over 120 years ago)",
    "E25": "policy_type is not 1 to 8",
    "E26": "entity_type is not 1 (individual) or 2 (organization)",
    "E27": "dl_number is not 9 digits",
    "E28": "fein is not 9 digits",
    "E29": "zip is not 5 or 9 digits",
    "E30": "vehicle_year is not a model year (1900 to next year)",
    "E31": "make is a default value (UNKN, N/A, OTHER, AAAAA...)",
    "E32": "plate is not 1 to 12 letters and digits",
    "E33": "an element holds a control character, * or ~, or is too long",
    "E34": "policy_type 4 is for DMV use only",
    # 34.9(f)(21): VINs
    "E40": "vin holds characters other than letters and digits, or I, O or Q",
    "E41": "vin length does not fit the model year (17 characters from 1981)",
    "E42": "vin check digit (position 9) is wrong",
    "E43": "vin is a word or abbreviation (UNKNOWN, FLEET POLICY, SEE POLICY...)",
    "E44": "vin is one repeated, consecutive or alternating character pattern",
    "E45": "vin is all or primarily letters",
    "E46": "vin is padded with zeros or a repeated character",
    # 34.9(f)(12): names
    "E50": "name holds punctuation other than the hyphen",
    "E51": "individual name holds AND, &, AND/OR or an estate",
    "E52": "name holds a prefix or suffix (MR, DR, JR, SR, II, III...)",
    # sequence rules
    "E60": "flat cancel: the XLC is effective on the date of the insurer's NBS",
    "E61": "second cancellation: no NBS, REI or REC since the insurer's last XLC",
    "E62": "REP matches no posted NBS or REI of this insurer and effective date",
    "E63": "REC matches no posted XLC of this insurer and effective date",
}

# --- Whole-file acknowledgement errors (the file or call is rejected, nothing is kept) -------

FILE_ERRORS: Final = {
    "F01": "not a UTF-8 text file",
    "F02": "the first line is not the IIES header",
    "F03": "a line is longer than the limit",
    "F04": "a row does not have the header's number of fields",
    "F05": "the file holds no transactions",
    "F06": "more transactions than one file or call may carry",
    "F07": "a txn_id appears twice in the file",
    "F08": "a txn_id was already received from this insurer",
    "F09": "no sender NAIC (none given nor on the first row), or one not bound to the account",
    "F10": "the file name is not 'IIES <NAIC> <YYYYMMDD>....csv'",
}

# --- IIES activity codes (what happened to a registration) -----------------------------------

ACTIVITIES: Final = {
    "CLR": "license clearance: suspension served, termination fee paid",
    "CVP": "civil penalty paid for a chargeable lapse",
    "CVR": "civil penalty rejected and returned",
    "DMV": "dealer/transporter mandatory verification letter sent to the insurer",
    "EXR": "registration expired",
    "GDR": "go date reached: registration suspension period served",
    "IPA": "insurance proof acceptable (paper proof posted)",
    "IPU": "insurance proof unacceptable",
    "LDT": "definite license suspension terminated",
    "LIR": "indefinite license suspension rescinded",
    "LNI": "no-insurer-verification (NIV) letter sent to the registrant",
    "LOD": "initial load of an insurer's book of business",
    "LSA": "license suspension amended",
    "LSD": "definite license suspension (lapse over 90 days)",
    "LSI": "indefinite license suspension",
    "LSN": "indefinite license suspension after an NIS",
    "LSV": "indefinite license suspension: no insurer verification",
    "LTF": "first inquiry letter sent after a cancellation",
    "LTJ": "rejection letter: the proof given was not acceptable",
    "LTR": "rescission of an inquiry letter sent",
    "LTS": "second inquiry letter sent",
    "MVF": "mandatory verification request sent to the insurer",
    "NBS": "new business posted",
    "NIS": "no insurance: the insurer denied coverage",
    "OPA": "other proof acceptable",
    "OPU": "other proof unacceptable",
    "PSB": "plate surrendered (bulk)",
    "PSM": "plate surrendered (modification)",
    "PSV": "plate surrendered voluntarily",
    "REC": "cancellation rescinded by the insurer",
    "REG": "vehicle registered (or for-hire renewal)",
    "REP": "proof (NBS/REI) rescinded by the insurer",
    "REI": "reinstatement posted",
    "RIR": "indefinite registration suspension rescinded",
    "RRR": "registration revocation rescinded (for hire)",
    "RRV": "registration revoked (for hire)",
    "RSA": "registration suspension amended",
    "RSD": "definite registration suspension",
    "RSI": "indefinite registration suspension",
    "RSN": "indefinite registration suspension after an NIS",
    "RSV": "indefinite registration suspension: no insurer verification",
    "UND": "correspondence returned undeliverable",
    "VRP": "vehicle replaced on the registration",
    "XLC": "cancellation posted",
}

# --- IIES case states ---------------------------------------------------------------------------

CASE_STATES: Final = {
    "CDB": "closed: registration suspension served, license fee paid",
    "CDR": "closed: registration suspension served",
    "CDV": "closed: registration revocation served",
    "CLA": "closed but amendable",
    "CLC": "closed: complied",
    "CLN": "closed: non-chargeable lapse",
    "CLS": "closed",
    "DBS": "definite registration and license suspensions",
    "DLR": "definite license suspension, registration suspension served",
    "DLS": "definite license suspension",
    "DRL": "definite registration suspension, license fee paid",
    "DRR": "definite registration revocation (for hire)",
    "DRS": "definite registration suspension",
    "FIQ": "first inquiry letter sent",
    "IBS": "indefinite registration and license suspensions",
    "ILS": "indefinite license suspension",
    "IRS": "indefinite registration suspension",
    "NEW": "new case",
    "NOC": "no open case",
    "SIQ": "second inquiry letter sent",
    "SMV": "mandatory verification begun or sent to the insurer",
}
CLOSED_STATES: Final = frozenset({"CDB", "CDR", "CDV", "CLA", "CLC", "CLN", "CLS"})

# --- IIES reason codes: A = accepted proof other than insurance, R = rejected ----------------

REASONS: Final = {
    "A01": "vehicle sold",
    "A02": "vehicle registered in another state",
    "A03": "vehicle repossessed",
    "A04": "vehicle impounded",
    "A05": "vehicle stolen",
    "A06": "registrant deceased",
    "A07": "hospitalization exemption",
    "A08": "spousal theft",
    "A09": "negligence or malfeasance of someone else",
    "A10": "other (see comments)",
    "A11": "vehicle junked",
    "A12": "plates stolen, lost or confiscated",
    "A13": "vehicle in secured storage",
    "A14": "vehicle in a repair shop",
    "A15": "vehicle totaled, ownership to the insurer",
    "A16": "lease expired, vehicle returned",
    "A17": "registration illegally obtained",
    "A18": "vehicle shipped out of the country",
    "A19": "military deployment",
    "A20": "temporary non-resident",
    "R01": "rejected: ID card from the cancelling insurer",
    "R02": "rejected: no proof submitted",
    "R03": "rejected: vehicle registered in another state, no proof",
    "R04": "rejected: insurer not licensed in the state",
    "R05": "rejected: vehicle sale not proven",
    "R06": "rejected: repossession not proven",
    "R07": "rejected: impound not proven",
    "R08": "rejected: theft not proven",
    "R09": "lapse under 91 days",
    "R10": "lapse of 91 days or more",
    "R11": "rejected: registrant deceased, no documents",
    "R12": "rejected: information missing",
    "R13": "rejected: proof for a different vehicle",
    "R14": "rejected: proof illegible",
    "R15": "rejected: premium notice or bill",
    "R16": "rejected: hospitalization",
    "R17": "rejected: spousal theft",
    "R18": "rejected: assigned-risk plan temporary card",
    "R19": "rejected: other",
    "R20": "rejected: electronic filing by the insurer required",
    "R21": "rejected: vehicle junked not proven",
    "R22": "rejected: plates stolen not proven",
    "R23": "rejected: vehicle totaled not proven",
    "R24": "rejected: repair shop documents",
    "R25": "rejected: secured storage documents",
    "R26": "rejected: bar-coded ID card not acceptable",
    "R27": "rejected: letter as insurance proof",
    "R28": "rejected: multiple cancellations, insurer must rescind",
    "R29": "rejected: expired lease",
    "R30": "rejected: vehicle shipped out of the country",
    "R31": "rejected: military deployment",
    "R32": "rejected: temporary non-resident",
    "R33": "rejected: compliance, plate surrender proof needed",
    "R34": "rejected: registrant deceased, registration expired",
    "R35": "rejected: insured and registrant names differ",
    "R36": "rejected: request denied",
}

# Letters and orders a registrant receives (each an activity code of its own).
LETTER_TYPES: Final = {
    "LTF": "first inquiry letter",
    "LTS": "second inquiry letter",
    "LNI": "no-insurer-verification (NIV) letter",
    "RSI": "registration suspension order",
    "RSN": "registration suspension order (insurer denied coverage)",
    "RSV": "registration suspension order (no insurer verification)",
    "LTR": "rescission of an inquiry letter",
    "RIR": "restoration notice: suspension rescinded",
}


def describe(code: str) -> str:
    """The description of any code above (edit, file, activity, case state, reason)."""
    for table in (EDITS, FILE_ERRORS, ACTIVITIES, CASE_STATES, REASONS, DISPOSITIONS):
        if code in table:
            return table[code]
    raise KeyError(code)
