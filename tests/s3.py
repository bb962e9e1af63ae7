"""A real S3-protocol server on loopback (moto in server mode) for backup storage tests.

Its fixtures are loaded for every test by tests/conftest.py (`pytest_plugins`); so is
`tasks_inline`, for the tests of what backup tasks do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from moto.server import ThreadedMotoServer

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class S3Bucket:
    endpoint_url: str
    name: str

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1", **CREDENTIALS
        )

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.name, Key=key)["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.name, Key=key, Body=data)

    def storage_settings(self) -> dict[str, Any]:
        return {
            "BACKEND": "backups.s3.S3BackupStorage",
            "OPTIONS": {
                "bucket_name": self.name,
                "endpoint_url": self.endpoint_url,
                "region_name": "us-east-1",
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "default_acl": None,
                "file_overwrite": False,
                "max_memory_size": 8 * 1024 * 1024,
                "transfer_config": TransferConfig(max_concurrency=2),
            },
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_storage(s3_server: str, settings: Any) -> S3Bucket:
    """A fresh bucket on the loopback server, configured as the backup storage."""
    bucket = S3Bucket(endpoint_url=s3_server, name=f"engram-{uuid.uuid4().hex[:12]}")
    bucket.client().create_bucket(Bucket=bucket.name)
    settings.STORAGES = {**settings.STORAGES, "backups": bucket.storage_settings()}
    return bucket


@pytest.fixture
def tasks_inline() -> Iterator[None]:
    """Celery tasks run in the caller, as in the embedded default, also when REDIS_URL is set
    (there a task would wait in the queue for a worker that tests do not start)."""
    from engram_cloud.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager
