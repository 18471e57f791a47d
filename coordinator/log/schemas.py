from pydantic import BaseModel


class LogEntryView(BaseModel):
    index: int
    body: str  # canonical JSON, exactly the signed bytes
    leaf_hash: str
    signature: str


class LogPage(BaseModel):
    entries: list[LogEntryView]


class TreeHeadView(BaseModel):
    size: int
    timestamp_ms: int
    root: str
    signature: str
    public_key: str


class ProofView(BaseModel):
    proof: list[str]
