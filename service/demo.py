"""Demo data for ``olv demo``: one insurer, a handful of policies that show each answer."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import Engine, delete

from olv import db, normalize
from olv.iicmva import FLEET, VEHICLE_SPECIFIC
from service.models import Coverage, Policy

DEMO_NAIC = "99999"
CONFIRMED_VIN = "1HGCM82633A004352"
CONFIRMED_POLICY = "DEMO-1001"


def sample_request(today: date) -> str:
    """A ready-to-send 00200809 SOAP request that the demo data confirms."""
    return f"""<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
 <soap:Body>
  <CoverageRequest xmlns="http://www.iicmva.com/CoverageVerification/"
                   PublicationVersion="00200809" PublicationDate="2008-09-01">
   <RequestorInformation>
    <Organization><Name>Demo State DMV</Name></Organization>
    <ReasonDetails><ReasonCode>VEHREG</ReasonCode></ReasonDetails>
   </RequestorInformation>
   <Detail>
    <PolicyInformation>
     <OrganizationDetails><NAIC>{DEMO_NAIC}</NAIC></OrganizationDetails>
     <PolicyDetails>
      <VerificationDate>{today.isoformat()}T00:00:00</VerificationDate>
      <PolicyKey>{CONFIRMED_POLICY}</PolicyKey>
      <PolicyState>ID</PolicyState>
     </PolicyDetails>
    </PolicyInformation>
    <VehicleInformation><VehicleDetails><VIN>{CONFIRMED_VIN}</VIN></VehicleDetails></VehicleInformation>
   </Detail>
  </CoverageRequest>
 </soap:Body>
</soap:Envelope>"""


def export_bob(engine: Engine, today: date, folder: Path) -> Path:
    """The demo insurer's monthly book-of-business file, as ``olv bob export`` writes it."""
    from service.bob_export import export_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"Demo {DEMO_NAIC} {today:%Y%m%d}.txt"
    export_file(engine, DEMO_NAIC, path, today)
    return path


def load(engine: Engine, today: date) -> int:
    """(Re)load the demo insurer's policies; returns the number of policies."""
    year = timedelta(days=365)
    rows = [
        # number, type, pending review, [(vin, effective, expiration, cancellation)]
        (
            CONFIRMED_POLICY,
            VEHICLE_SPECIFIC,
            False,
            [(CONFIRMED_VIN, today - year, today + year, None)],
        ),
        (
            "DEMO-1002",
            VEHICLE_SPECIFIC,
            False,
            [("2T1BURHE0JC014706", today - year, today + year, today - timedelta(days=30))],
        ),
        ("DEMO-FLEET-1", FLEET, False, [(None, today - year, today + year, None)]),
        (
            "DEMO-1004",
            VEHICLE_SPECIFIC,
            True,
            [("5YJSA1E26HF000337", today - year, today + year, None)],
        ),
    ]
    with db.transaction(engine) as session:
        session.execute(delete(Policy).where(Policy.naic == DEMO_NAIC))
        for number, ptype, pending, periods in rows:
            policy = Policy(
                naic=DEMO_NAIC,
                policy_number=number,
                policy_key=normalize.policy_key(number),
                policy_type=ptype,
                pending_review=pending,
            )
            session.add(policy)
            session.flush()
            for vin, effective, expiration, cancel in periods:
                session.add(
                    Coverage(
                        policy_id=policy.id,
                        naic=DEMO_NAIC,
                        vin=vin,
                        effective_date=effective,
                        expiration_date=expiration,
                        cancel_date=cancel,
                    )
                )
    return len(rows)


BANNER = """
OLV demo: database {database}, insurer NAIC {naic} with {count} policies.
SOAP service: {url}   (WSDL: {url}?wsdl; also /iicmva/00200510 and auto-detecting /iicmva)

Try it (a sample request was written to {request_file}):

  curl -s -H 'Content-Type: text/xml; charset=utf-8' \\
       -H 'SOAPAction: "http://www.iicmva.com/VerifyInsurance"' \\
       --data-binary @{request_file} {url}

or with zeep:

  python -c "import zeep; c = zeep.Client('{url}?wsdl'); print(c.service.VerifyInsurance(
      Detail={{'PolicyInformation': {{'OrganizationDetails': {{'NAIC': '{naic}'}},
        'PolicyDetails': {{'VerificationDate': '{today}T00:00:00',
          'PolicyKey': '{policy}', 'PolicyState': 'ID'}}}},
        'VehicleInformation': {{'VehicleDetails': {{'VIN': '{vin}'}}}}}},
      PublicationVersion='00200809', PublicationDate='2008-09-01'))"
"""


def banner(database: str, url: str, request_file: str, today: date, count: int) -> str:
    return BANNER.format(
        database=database,
        naic=DEMO_NAIC,
        count=count,
        url=url,
        request_file=request_file,
        today=today.isoformat(),
        policy=CONFIRMED_POLICY,
        vin=CONFIRMED_VIN,
    )
