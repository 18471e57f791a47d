"""The store a coordinator's settings name (docs/coordinator.md, "Blob store")."""

from coordinator.blobstore.base import BlobStore
from coordinator.blobstore.filesystem import FilesystemBlobStore
from coordinator.settings import Settings
from protocol.errors import InvalidInput


def create_blob_store(settings: Settings) -> BlobStore:
    if settings.blob_store == "filesystem":
        return FilesystemBlobStore(settings.get_blob_dir())
    if not settings.s3_bucket:
        raise InvalidInput("blob_store=s3 needs VERITRAIN_S3_BUCKET", "s3_bucket")
    import boto3  # only deployments that use S3 pay for importing it

    from coordinator.blobstore.s3 import S3BlobStore

    client = boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region
    )
    return S3BlobStore(client, settings.s3_bucket, settings.s3_prefix)
