"""ID-card format (SPEC §7): the key file, COSE_Sign1 over CBOR, the barcode's digits, and the
verify answer — including forgeries that re-encode a changed card, not just flipped bytes."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcards import armour, barcode, cose, keys, signed
from idcards.card import CardError, to_map
from idcards.errors import CannotRead
from idcards.verify import KnownKey, verify_text
from tests.helpers.idcards import PIN, make_key, sample_card

TODAY = date.today()


def registry(*known: keys.SigningKey, **revocation: object):
    table = {
        k.key_id_text: KnownKey(
            key_id=k.key_id_text,
            issuer=k.issuer,
            issuer_name="Agent",
            public_key=k.private.public_key(),
            **revocation,  # type: ignore[arg-type]
        )
        for k in known
    }
    return table.get


@pytest.fixture
def key(tmp_path: Path) -> keys.SigningKey:
    return make_key(tmp_path)


def test_key_file_is_private_sealed_and_pin_bound(tmp_path: Path) -> None:
    key, public_path = keys.generate("PC-123456", PIN, tmp_path / "k.key")
    assert stat.S_IMODE(os.stat(tmp_path / "k.key").st_mode) == 0o600
    assert public_path == tmp_path / "k.key.pub"
    document = json.loads((tmp_path / "k.key").read_text())
    assert document["kdf"]["name"] == "scrypt" and document["cipher"] == "AES-256-GCM"
    assert document["key_id"] == key.key_id_text and len(key.key_id_text) == 16
    # The seed is nowhere in the file in the clear.
    seed = key.private.private_bytes_raw()
    assert seed.hex() not in (tmp_path / "k.key").read_text()
    assert keys.load_signing(tmp_path / "k.key", PIN).key_id == key.key_id
    assert keys.key_id(keys.load_public(public_path)) == key.key_id
    with pytest.raises(keys.WrongPin):
        keys.load_signing(tmp_path / "k.key", PIN + "x")
    # The issuer written in the file is bound to the sealed key: changing it breaks the seal.
    document["issuer"] = "PC-999999"
    (tmp_path / "other.key").write_text(json.dumps(document))
    with pytest.raises(keys.WrongPin):
        keys.load_signing(tmp_path / "other.key", PIN)
    # A doctored file asking scrypt for gigabytes is refused before scrypt runs.
    document["kdf"]["n"] = 2**30
    (tmp_path / "greedy.key").write_text(json.dumps(document))
    with pytest.raises(keys.KeyFileError):
        keys.load_signing(tmp_path / "greedy.key", PIN)
    with pytest.raises(keys.KeyFileError):
        keys.load_signing(public_path, PIN)


def test_key_file_scrypt_parameters_are_only_olvs(tmp_path: Path) -> None:
    """Parameters OLV never writes are refused before scrypt runs, whatever they are: more
    work than OLV's (each of these cost scrypt gigabytes or minutes up to 2**20, 16, 4), not a
    power of two (scrypt's own ValueError), or not numbers."""
    keys.generate("PC-123456", PIN, tmp_path / "k.key")
    document = json.loads((tmp_path / "k.key").read_text())
    for n, r, p in ((2**16, 8, 1), (2**15, 16, 1), (2**15, 8, 4), (1025, 8, 1), ("32768", 8, 1),
                    (2**15, True, 1), (2**15.0, 8, 1)):  # fmt: skip
        doctored = {**document, "kdf": {**document["kdf"], "n": n, "r": r, "p": p}}
        path = tmp_path / "doctored.key"
        path.write_text(json.dumps(doctored))
        with pytest.raises(keys.KeyFileError, match="scrypt parameters are not OLV's"):
            keys.load_signing(path, PIN)
    assert keys.load_signing(tmp_path / "k.key", PIN).issuer == "PC-123456"


def test_keygen_never_overwrites_and_wants_a_real_pin(tmp_path: Path) -> None:
    keys.generate("PC-123456", PIN, tmp_path / "k.key")
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(keys.UsageError):
        keys.generate("PC-123456", PIN, tmp_path / "k.key")
    assert (tmp_path / "k.key").read_bytes() == before
    with pytest.raises(keys.UsageError):
        keys.generate("PC-123456", "123", tmp_path / "short.key")


def test_round_trip_is_valid_and_compact(key: keys.SigningKey) -> None:
    card = sample_card()
    text = signed.sign_card(card, key)
    assert text.isdigit() and len(text) < 700
    answer = verify_text(text, registry(key), TODAY)
    assert answer["valid"] is True and answer["reason"] == "valid"
    assert answer["issuer"] == "PC-123456" and answer["key_id"] == key.key_id_text
    assert answer["card"]["vin"] == card.vin and answer["card"]["names"] == list(card.names)
    assert answer["card"]["card_id"] == card.card_id_text
    # Printed at 0.38 mm modules the symbol fits a card (under 10 cm by 4 cm).
    width, height = barcode.size_mm(barcode.codes(text))
    assert width < 100 and height < 40


def test_fast_error_correction_matches_the_encoder() -> None:
    """barcode.codes replaces pdf417gen's Reed-Solomon loop: the symbols must be identical."""
    import random

    import pdf417gen

    rng = random.Random(15)
    for length in (20, 600, 1100):
        text = "1" + "".join(rng.choice("0123456789") for _ in range(length))
        assert barcode.codes(text) == pdf417gen.encode(text, columns=10, security_level=5)
    assert barcode.codes("OLV 1") == pdf417gen.encode("OLV 1", columns=10, security_level=5)


def test_message_is_standard_cose_sign1(key: keys.SigningKey) -> None:
    raw = armour.decode(signed.sign_card(sample_card(), key))
    message = cbor2.loads(raw)
    assert message.tag == 18
    protected, unprotected, payload, signature = message.value
    assert cbor2.loads(protected) == {1: -8, 4: key.key_id}
    assert unprotected == {} and len(signature) == 64
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    key.private.public_key().verify(signature, to_be_signed)  # raises if not RFC 9052


def test_every_flipped_byte_is_not_valid(key: keys.SigningKey) -> None:
    raw = armour.decode(signed.sign_card(sample_card(), key))
    lookup = registry(key)
    for index in range(len(raw)):
        forged = bytearray(raw)
        forged[index] ^= 0x01
        answer = verify_text(armour.encode(bytes(forged)), lookup, TODAY)
        assert answer["valid"] is False, index
        assert answer["card"] is None, index  # nothing from a changed card is shown


def forge(text: str, field: int, value: object) -> str:
    """The card re-encoded with one field changed, in a well-formed message that keeps the
    issuer's protected header and signature (what a forger without the key can make)."""
    message = cose.parse(armour.decode(text))
    fields = cbor2.loads(message.payload)
    fields[field] = value
    payload = cbor2.dumps(fields, canonical=True)
    parts = [message.protected, {}, payload, message.signature]
    return armour.encode(cbor2.dumps(cbor2.CBORTag(18, parts), canonical=True))


def test_reencoded_forgeries_are_not_valid(key: keys.SigningKey, tmp_path: Path) -> None:
    text = signed.sign_card(sample_card(), key)
    lookup = registry(key)
    # A changed VIN / expiry day / policy number / name, properly encoded, old signature kept.
    for field, value in ((13, "2T1BURHE0JC000001"), (8, 99999), (6, "FAKE-1"), (10, ["X Y"])):
        answer = verify_text(forge(text, field, value), lookup, TODAY)
        assert (answer["valid"], answer["reason"], answer["card"]) == (False, "bad signature", None)
    # Signed by a forger's own key under the real issuer's key id.
    thief = Ed25519PrivateKey.generate()
    card = sample_card(expires=TODAY + timedelta(days=3000))
    payload = cbor2.dumps(to_map(card), canonical=True)
    fake = armour.encode(cose.sign(payload, thief, key.key_id))
    answer = verify_text(fake, lookup, TODAY)
    assert (answer["valid"], answer["reason"]) == (False, "bad signature")
    # Or under a key id nobody registered.
    other = make_key(tmp_path, name="other.key")
    answer = verify_text(signed.sign_card(card, other), lookup, TODAY)
    assert (answer["valid"], answer["reason"]) == (False, "unknown key")
    # A registered key of another issuer signing a card in this issuer's name.
    stranger = make_key(tmp_path, issuer="BR-777777", name="stranger.key")
    answer = verify_text(signed.sign_card(card, stranger), registry(key, stranger), TODAY)
    assert answer["valid"] is False and "another issuer" in answer["reason"]


def test_non_canonical_and_extra_parts_are_refused(key: keys.SigningKey) -> None:
    text = signed.sign_card(sample_card(), key)
    message = cose.parse(armour.decode(text))
    lookup = registry(key)
    # A header smuggled into the unprotected map is outside the signature: refused.
    smuggled = cbor2.dumps(
        cbor2.CBORTag(18, [message.protected, {4: b"x"}, message.payload, message.signature])
    )
    assert verify_text(armour.encode(smuggled), lookup, TODAY)["valid"] is False
    # An untagged message.
    untagged = cbor2.dumps([message.protected, {}, message.payload, message.signature])
    assert verify_text(armour.encode(untagged), lookup, TODAY)["reason"].startswith("malformed")


def test_dates_revocation_and_fs75(key: keys.SigningKey) -> None:
    card = sample_card()
    text = signed.sign_card(card, key)
    later = verify_text(text, registry(key), card.expires + timedelta(days=1))
    assert later["valid"] is False and later["expired"] is True and later["signature"] == "good"
    early = verify_text(text, registry(key), card.effective - timedelta(days=1))
    assert early["valid"] is False and early["reason"] == "not yet in effect"
    # Compromised today: today's cards are refused; cards dated before stay good.
    now = datetime.now(UTC)
    compromised = registry(key, revoked_at=now, revoke_reason="compromised")
    answer = verify_text(text, compromised, TODAY)
    assert answer["valid"] is False and answer["revoked"] is True
    older = signed.sign_card(sample_card(issued=TODAY - timedelta(days=2)), key)
    assert verify_text(older, compromised, TODAY)["valid"] is True
    # Retired today: today's cards stand, tomorrow's do not.
    retired = registry(key, revoked_at=now, revoke_reason="retired")
    assert verify_text(text, retired, TODAY)["valid"] is True
    tomorrow = signed.sign_card(sample_card(issued=TODAY + timedelta(days=1)), key)
    assert verify_text(tomorrow, retired, TODAY + timedelta(days=1))["revoked"] is True
    # FS-75: 60 days after preparation even if the printed expiry were later.
    fs75 = sample_card(fs75=True, expires=TODAY + timedelta(days=200))
    fs75_text = signed.sign_card(fs75, key)
    assert verify_text(fs75_text, registry(key), TODAY + timedelta(days=60))["valid"] is True
    past = verify_text(fs75_text, registry(key), TODAY + timedelta(days=61))
    assert (past["valid"], past["reason"], past["expired"]) == (False, "FS-75 past 60 days", True)
    assert past["card"]["registration_until"] == (TODAY + timedelta(days=45)).isoformat()


def test_text_that_is_no_card_cannot_be_read(key: keys.SigningKey) -> None:
    for text in ("", "hello", "2" + "1" * 50, "1" + "9" * (armour.MAX_DIGITS + 5), "1", " 1\n"):
        with pytest.raises(CannotRead):
            verify_text(text, registry(key), TODAY)
    # Every malformed armour is the armour's own error: callers tell "cannot read" by it.
    for text in ("1", "10", "100", "1" + "0" * 40):
        with pytest.raises(armour.ArmourError):
            armour.decode(text)


def test_a_post_dated_card_is_not_valid(key: keys.SigningKey) -> None:
    """An issue date after today is refused for every card type (an FS-75 dated 400 days on
    would otherwise count its 60 days from then); a day ahead is the time zones' slack."""
    for fs75 in (True, False):
        for ahead in (2, 400):
            card = sample_card(fs75=fs75, issued=TODAY + timedelta(days=ahead))
            answer = verify_text(signed.sign_card(card, key), registry(key), TODAY)
            assert (answer["valid"], answer["reason"]) == (False, "issue date in the future")
            assert answer["signature"] == "good" and answer["expired"] is False
        # Dated tomorrow by an issuer east of the verifier: valid.
        tomorrow = sample_card(fs75=fs75, issued=TODAY + timedelta(days=1))
        assert verify_text(signed.sign_card(tomorrow, key), registry(key), TODAY)["valid"] is True
    # The same post-dated card is fine once its day has come.
    later = sample_card(issued=TODAY + timedelta(days=30))
    answer = verify_text(signed.sign_card(later, key), registry(key), TODAY + timedelta(days=30))
    assert answer["valid"] is True


def test_card_fields_are_checked() -> None:
    with pytest.raises(CardError):
        sample_card(naic="123")
    with pytest.raises(CardError):
        sample_card(names=())
    with pytest.raises(CardError):
        sample_card(make="A\x00B")
    with pytest.raises(CardError):
        sample_card(expires=TODAY - timedelta(days=400))
    assert dataclasses.replace(sample_card(), replacement=True).replacement


def test_cards_csv_accepts_other_spellings(tmp_path: Path) -> None:
    from idcards.issue import Options, cards_from_csv

    path = tmp_path / "cards.csv"
    path.write_text(
        "Insurer,NAIC,Policy,Effective,Expires,Registrants,Vehicle Year,Vehicle Make,VIN\n"
        "Empire Mutual,12345,P-1,01/15/2026,20270115,A B;C D,2020,ford,1FTFW1ET5DFC10312\n"
    )
    (card,) = cards_from_csv(path, "PC-123456", Options(today=date(2026, 2, 1)))
    assert (card.effective, card.expires) == (date(2026, 1, 15), date(2027, 1, 15))
    assert card.names == ("A B", "C D") and card.make == "FORD" and card.year == 2020
