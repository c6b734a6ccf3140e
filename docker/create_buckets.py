"""Create the compose stack's S3 buckets if they are missing; safe to run on every start."""

from __future__ import annotations

import os
import sys

import boto3
from botocore.exceptions import ClientError


def ensure_bucket(client, name: str) -> bool:
    """Create the bucket unless it exists; returns True when it was created."""
    try:
        client.head_bucket(Bucket=name)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise  # e.g. 403: wrong keys must fail the job, not be mistaken for a missing bucket
    client.create_bucket(Bucket=name)
    return True


def main() -> int:
    client = boto3.client("s3", endpoint_url=os.environ["TWIN_S3_ENDPOINT_URL"])
    names = {os.environ["TWIN_ARTIFACTS_S3_BUCKET"], os.environ["MLFLOW_ARTIFACTS_BUCKET"]}
    for name in sorted(names):
        created = ensure_bucket(client, name)
        print(f"bucket {name}: {'created' if created else 'exists'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
