"""The SOAP bench's data: a synthetic book of policies and the requests that query it.

Four NAICs with realistic policy-number formats, check-digit-valid VINs, some multi-vehicle,
fleet, cancelled and pending-review policies; requests in a fixed mix of confirmed hits,
misses, both IICMVA versions and all three endpoints, with varied requestor blocks, reason
codes, vehicle details and date formats. No real people.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from olv.iicmva import (
    FLEET,
    IICMVA,
    PUBLICATION_DATE_0809,
    REQUEST_REASON_0510,
    REQUEST_REASONS,
    SOAP11_ENV,
    V0510,
    V0809,
    VEHICLE_SPECIFIC,
)
from olv.normalize import UNKNOWN_POLICY_KEY
from olv.vin import with_check_digit
from service.policy_import import CSV_COLUMNS
from service.verifier import ENDPOINTS

# NAIC -> (policy number pattern, share of the book)
NAICS = {
    "10111": ("PA-{n:010d}", 0.4),
    "20222": ("AUT {a} {n:06d} {b:02d}", 0.3),
    "30333": ("7{n:09d}", 0.2),
    "40444": ("CA{n:09d}-{y}", 0.1),
}
WMIS = ("1HG", "1FT", "1G1", "2T1", "3VW", "4T1", "5YJ", "JTD", "KMH", "WBA", "WVW", "1C4")
VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
YEAR_CHARS = "ABCDEFGHJKLMNPRSTVWXY123456789"
MAKES = (("HONDA", "ACCORD"), ("FORD", "F-150"), ("TOYOTA", "CAMRY"), ("TESLA", "MODEL S"))
REASONS_0510 = tuple(sorted(set(REQUEST_REASON_0510.values())))
STATES = ("ID", "AL", "TX", "NY", "CA", "WA")


def make_vin(rng: random.Random) -> str:
    """A 17-character VIN with a valid check digit (position 9)."""
    return with_check_digit(
        rng.choice(WMIS)
        + "".join(rng.choice(VIN_CHARS) for _ in range(5))
        + "0"
        + rng.choice(YEAR_CHARS)
        + rng.choice(VIN_CHARS)
        + f"{rng.randrange(1_000_000):06d}"
    )


@dataclass
class BenchPolicy:
    naic: str
    number: str
    kind: str  # VEHICLE_SPECIFIC or FLEET
    vins: list[str]
    cancelled: bool = False
    pending: bool = False


@dataclass
class Corpus:
    requests: list[tuple[str, bytes]]  # (path, body)
    expected_confirmed: int
    mix: dict[str, int] = field(default_factory=dict)

    @property
    def expected_share(self) -> float:
        return self.expected_confirmed / max(1, len(self.requests))


def generate_policies(count: int, today: date, rng: random.Random) -> list[BenchPolicy]:
    policies = []
    naics = list(NAICS)
    weights = [share for _, share in NAICS.values()]
    serial = {naic: rng.randrange(10_000, 90_000) for naic in naics}
    for _ in range(count):
        naic = rng.choices(naics, weights)[0]
        serial[naic] += rng.randrange(1, 40)
        number = NAICS[naic][0].format(
            n=serial[naic], a=rng.choice("ABCDEFGH"), b=rng.randrange(1, 20), y=today.year
        )
        roll = rng.random()
        if roll < 0.01:
            policy = BenchPolicy(naic, number, FLEET, [make_vin(rng) for _ in range(3)])
        else:
            vehicles = 2 if roll < 0.08 else 1
            vins = [make_vin(rng) for _ in range(vehicles)]
            policy = BenchPolicy(naic, number, VEHICLE_SPECIFIC, vins)
        policy.cancelled = 0.01 <= roll < 0.04
        policy.pending = 0.04 <= roll < 0.045
        policies.append(policy)
    return policies


def write_policy_csv(path: Path, policies: list[BenchPolicy], today: date, seed: int) -> None:
    """The book in ``olv policies import``'s CSV format."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for p in policies:
            effective = today - timedelta(days=rng.randrange(60, 700))
            expiration = today + timedelta(days=rng.randrange(30, 365))
            cancel = today - timedelta(days=rng.randrange(10, 40)) if p.cancelled else None
            # A fleet policy is verified at policy level: its vehicles are not listed.
            for vin in [""] if p.kind == FLEET else p.vins:
                writer.writerow(
                    [
                        p.naic,
                        p.number,
                        p.kind,
                        vin,
                        effective.isoformat(),
                        expiration.isoformat(),
                        cancel.isoformat() if cancel else "",
                        "Y" if p.pending else "N",
                    ]
                )


def _verification_date(day: date, rng: random.Random) -> str:
    style = rng.random()
    if style < 0.6:
        return f"{day.isoformat()}T00:00:00"
    if style < 0.9:
        return f"{day.isoformat()}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00-06:00"
    return f"{day.isoformat()}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"


def _vehicle(vin: str, rng: random.Random) -> str:
    extra = ""
    if rng.random() < 0.5:
        make, model = rng.choice(MAKES)
        extra = f"<Make>{make}</Make><Model>{model}</Model><Year>{rng.randrange(2005, 2026)}</Year>"
    return (
        f"<VehicleInformation><VehicleDetails><VIN>{vin}</VIN>{extra}"
        "</VehicleDetails></VehicleInformation>"
    )


def request_body(
    version: str, naic: str, key: str, vin: str, verification: str, rng: random.Random
) -> bytes:
    if version == V0809:
        root_attrs = f' PublicationVersion="{V0809}" PublicationDate="{PUBLICATION_DATE_0809}"'
        key_element, reason = "PolicyKey", rng.choice(REQUEST_REASONS)
    else:
        root_attrs, key_element, reason = "", "UniqueKey", rng.choice(REASONS_0510)
    officer = (
        "<Individual><ParsedName><GivenName>Maria</GivenName><Surname>Garcia</Surname>"
        "</ParsedName></Individual><Organization><Name>Ada County Sheriff</Name></Organization>"
    )
    if version == V0809:
        requestor = rng.choice(
            (
                "<Organization><Name>Idaho Transportation Department</Name></Organization>",
                "<Organization><Name>State Police District 4</Name></Organization>",
                officer,
            )
        )
    else:  # 00200510 requires the Individual block in RequestorInformation
        requestor = officer
    tracking = f"<TrackingNumber>TS-{rng.randrange(10**8):08d}</TrackingNumber>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="{SOAP11_ENV}">
 <soap:Body>
  <CoverageRequest xmlns="{IICMVA}"{root_attrs}>
   <RequestorInformation>{requestor}
    <ReasonDetails><ReasonCode>{reason}</ReasonCode>{tracking}</ReasonDetails>
   </RequestorInformation>
   <Detail>
    <PolicyInformation>
     <OrganizationDetails><NAIC>{naic}</NAIC></OrganizationDetails>
     <PolicyDetails>
      <VerificationDate>{verification}</VerificationDate>
      <{key_element}>{key}</{key_element}>
      <PolicyState>{rng.choice(STATES)}</PolicyState>
     </PolicyDetails>
    </PolicyInformation>
    {_vehicle(vin, rng)}
   </Detail>
  </CoverageRequest>
 </soap:Body>
</soap:Envelope>""".encode()


# The service's endpoints by the version they serve (None: the one that detects it).
ENDPOINT = {version: path for path, version in ENDPOINTS.items()}

# (kind, share in %, endpoint, version, expected to confirm)
MIX = (
    ("confirmed 00200809", 78, ENDPOINT[V0809], V0809, True),
    ("confirmed 00200510", 5, ENDPOINT[V0510], V0510, True),
    ("confirmed, auto-detect endpoint", 4, ENDPOINT[None], V0809, True),
    ("VIN-only search (key UNKNOWN)", 3, ENDPOINT[V0809], V0809, True),
    ("unknown policy key", 4, ENDPOINT[V0809], V0809, False),
    ("VIN not on the policy", 3, ENDPOINT[V0809], V0809, False),
    ("cancelled policy", 3, ENDPOINT[V0809], V0809, False),
)


def generate_corpus(
    policies: list[BenchPolicy], today: date, size: int, rng: random.Random
) -> Corpus:
    plain = [p for p in policies if not p.cancelled and not p.pending]
    vehicle = [p for p in plain if p.kind == VEHICLE_SPECIFIC]
    cancelled = [p for p in policies if p.cancelled and p.kind == VEHICLE_SPECIFIC] or vehicle
    kinds = [m[0] for m in MIX]
    weights = [m[1] for m in MIX]
    spec = {m[0]: m for m in MIX}
    requests: list[tuple[str, bytes]] = []
    expected = 0
    mix: dict[str, int] = dict.fromkeys(kinds, 0)
    for _ in range(size):
        kind = rng.choices(kinds, weights)[0]
        _, _, path, version, confirms = spec[kind]
        day = today - timedelta(days=rng.randrange(0, 5))
        if kind == "VIN-only search (key UNKNOWN)":
            policy = rng.choice(vehicle)
            key = rng.choice((UNKNOWN_POLICY_KEY, UNKNOWN_POLICY_KEY.lower()))
            naic, vin = policy.naic, policy.vins[0]
        elif kind == "unknown policy key":
            policy = rng.choice(plain)
            naic, key, vin = policy.naic, f"ZZ-{rng.randrange(10**9):09d}", make_vin(rng)
        elif kind == "VIN not on the policy":
            policy = rng.choice(vehicle)
            naic, key, vin = policy.naic, policy.number, make_vin(rng)
        elif kind == "cancelled policy":
            policy = rng.choice(cancelled)
            naic, key, vin = policy.naic, policy.number, policy.vins[0]
        else:
            policy = rng.choice(plain)
            naic, key, vin = policy.naic, policy.number, rng.choice(policy.vins)
        body = request_body(version, naic, key, vin, _verification_date(day, rng), rng)
        requests.append((path, body))
        mix[kind] += 1
        expected += confirms
    return Corpus(requests, expected, mix)


# The corpus file, read by bench/soap_wrk.lua and the Python generator: per request a header
# line "PATH LENGTH", then LENGTH bytes of body, then a newline.


def write_corpus(path: Path, corpus: Corpus) -> None:
    with path.open("wb") as handle:
        for endpoint, body in corpus.requests:
            handle.write(f"{endpoint} {len(body)}\n".encode() + body + b"\n")


def read_corpus(path: Path) -> list[tuple[str, bytes]]:
    items = []
    with path.open("rb") as handle:
        while header := handle.readline():
            endpoint, length = header.decode().split()
            items.append((endpoint, handle.read(int(length))))
            handle.readline()
    return items
