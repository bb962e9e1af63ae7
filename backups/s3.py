"""Backup storage on S3 or R2: django-storages' S3 storage, made to move backups of hundreds of
megabytes without holding them in memory. A module of its own, named only in settings, so
boto3 is imported only where S3 is configured and used.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from storages.backends.s3 import S3Storage
from storages.utils import clean_name


class S3BackupStorage(S3Storage):
    def _save(self, name: str, content: Any) -> str:
        """A file on local disk (Django's `temporary_file_path()`) is uploaded from its path:
        boto3 then reads each part from disk as it sends it. From an open file it reads parts
        into memory first, up to ten 8 MiB parts ahead of the network."""
        if not hasattr(content, "temporary_file_path"):
            return super()._save(name, content)
        cleaned = clean_name(name)
        self.bucket.Object(self._normalize_name(cleaned)).upload_file(
            content.temporary_file_path(),
            ExtraArgs=self._get_write_parameters(cleaned, content),
            Config=self.transfer_config,
        )
        return cleaned

    def open_stream(self, name: str) -> BinaryIO:
        """The object's HTTP response body, to be read once as it arrives (`open()` first
        downloads the whole object into a temporary file)."""
        return self.bucket.Object(self._normalize_name(clean_name(name))).get()["Body"]
