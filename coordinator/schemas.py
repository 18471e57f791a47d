"""Field types shared by every slice's request and response schemas."""

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _integral_float_as_int(value: object) -> object:
    """JSON Schema's `integer` includes 5.0, so it is 5; a bool, a string or 5.5 stays refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


MAX_AMOUNT = 10**15  # micro-units; sums of a few of these stay far below BIGINT
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold a NUL character (a 500 there, not a 422)
MAX_ROW_ID = 2**31 - 1  # ids are INTEGER columns: int4 on PostgreSQL, so nothing lies beyond
# strict (no "5", no true), Field first: its bounds stay minimum/maximum in the schema
Integer = Annotated[int, Field(strict=True), BeforeValidator(_integral_float_as_int)]
Amount = Annotated[
    int, Field(strict=True, ge=0, le=MAX_AMOUNT), BeforeValidator(_integral_float_as_int)
]
PositiveAmount = Annotated[
    int, Field(strict=True, ge=1, le=MAX_AMOUNT), BeforeValidator(_integral_float_as_int)
]
HexKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", min_length=64, max_length=64)]
Hex32 = HexKey


class Request(BaseModel):
    """Base of every request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class EmptyRequest(Request):
    """Body of a request whose meaning is all in its path (still signed, still JSON: `{}`)."""
