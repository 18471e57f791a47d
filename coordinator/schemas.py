"""Field types shared by every slice's request and response schemas."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_AMOUNT = 10**15  # micro-units; sums of a few of these stay far below BIGINT
Amount = Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]
PositiveAmount = Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT)]
HexKey = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", min_length=64, max_length=64)]
Hex32 = HexKey


class Request(BaseModel):
    """Base of every request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class EmptyRequest(Request):
    """Body of a request whose meaning is all in its path (still signed, still JSON: `{}`)."""
