"""Input rules shared by the services (docs/design.md §6).

Each check returns a FieldViolation or None; a handler collects them and
raises one INVALID_ARGUMENT naming every bad field, before touching storage.
"""

from __future__ import annotations

import re
import uuid

from service_kit.errors import FieldViolation, invalid_argument

MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 500
MAX_QUANTITY = 1_000_000
# Far beyond any real order in any currency's minor units: such a number is a bug.
MAX_AMOUNT = 1_000_000_000_000
DEFAULT_CURRENCY = "JPY"

# ISO 4217 codes accepted; the common ones, not the whole list.
CURRENCIES = frozenset(
    [
        "JPY",
        "USD",
        "EUR",
        "GBP",
        "CHF",
        "CNY",
        "KRW",
        "TWD",
        "HKD",
        "SGD",
        "AUD",
        "NZD",
        "CAD",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "HUF",
        "INR",
        "IDR",
        "THB",
        "MYR",
        "PHP",
        "VND",
        "BRL",
        "MXN",
        "ZAR",
        "TRY",
        "AED",
        "SAR",
        "ILS",
    ]
)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_SAGA_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Characters no id or free text may hold: C0 and C1 controls (a terminal obeys
# them), DEL, line and paragraph separators, and the bidirectional formatting
# characters that make text read differently from what it is (CVE-2021-42574).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


def check_saga_id(name: str, value: str) -> FieldViolation | None:
    if not value:
        return FieldViolation(name, "must not be empty")
    try:
        uuid.UUID(value[:64])
    except ValueError:
        return FieldViolation(name, f"must be a UUID, got {_show(value)}")
    if not _SAGA_ID.fullmatch(value):  # one spelling per saga, or two keys for one saga
        return FieldViolation(
            name, f"must be a lower-case UUID in 8-4-4-4-12 form, got {_show(value)}"
        )
    return None


def check_id(name: str, value: str, *, required: bool = True) -> FieldViolation | None:
    if not value:
        return FieldViolation(name, "must not be empty") if required else None
    if len(value) > MAX_ID_LENGTH:
        return FieldViolation(name, f"must be at most {MAX_ID_LENGTH} characters")
    if not _ID.fullmatch(value):
        return FieldViolation(
            name, f"may hold only letters, digits and _ . : - (got {_show(value)})"
        )
    return None


def check_text(name: str, value: str, *, required: bool = True) -> FieldViolation | None:
    if not value:
        return FieldViolation(name, "must not be empty") if required else None
    if not value.strip():
        return FieldViolation(name, "must not be blank")
    if len(value) > MAX_TEXT_LENGTH:
        return FieldViolation(name, f"must be at most {MAX_TEXT_LENGTH} characters")
    unsafe = _UNSAFE.search(value)
    if unsafe is not None:
        return FieldViolation(
            name,
            f"must not hold control or bidirectional formatting characters "
            f"(U+{ord(unsafe.group()):04X} at {unsafe.start()})",
        )
    return None


def check_timestamp(name: str, seconds: int, nanos: int) -> FieldViolation | None:
    """A google.protobuf.Timestamp inside its documented range, nanos normalised."""
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        return FieldViolation(name, "must be between 0001-01-01 and 9999-12-31")
    if not 0 <= nanos < 1_000_000_000:
        return FieldViolation(name, "nanos must be between 0 and 999,999,999")
    return None


def check_quantity(name: str, value: int, *, allow_zero: bool = False) -> FieldViolation | None:
    low = 0 if allow_zero else 1
    if value < low:
        return FieldViolation(name, f"must be {'zero or more' if allow_zero else 'positive'}")
    if value > MAX_QUANTITY:
        return FieldViolation(name, f"must be at most {MAX_QUANTITY:,}")
    return None


def check_amount(name: str, value: int) -> FieldViolation | None:
    if value <= 0:
        return FieldViolation(name, "must be positive (minor units of the currency)")
    if value > MAX_AMOUNT:
        return FieldViolation(name, f"must be at most {MAX_AMOUNT:,}")
    return None


def check_currency(name: str, value: str) -> FieldViolation | None:
    if value and value not in CURRENCIES:
        return FieldViolation(name, f"unknown ISO 4217 currency {_show(value)}")
    return None


def require_valid(*checks: FieldViolation | None) -> None:
    """Raises one INVALID_ARGUMENT naming every failed check."""
    violations = [v for v in checks if v is not None]
    if violations:
        raise invalid_argument(*violations)


def _show(value: str) -> str:
    """A bad value in a message: cut short, and every unprintable character
    escaped (repr), so that an error never carries a control character."""
    return ascii(value if len(value) <= 40 else value[:40] + "…")
