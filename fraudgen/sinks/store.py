"""Where batches are written: a local directory or an S3 prefix, behind one small interface.

Publishing is what makes a batch visible. Locally, a batch is written into a staging directory and
renamed into place in one step. On S3 (no rename), every part is written under its final key and
``manifest.json`` is written last: readers treat a prefix without a manifest as incomplete, and a retry
overwrites the same deterministic keys. Every S3 object is written with SSE (AES256).
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    """A storage operation failed; the message names the location and the cause (never credentials)."""


class Store(Protocol):
    root: str

    def uri(self, key: str) -> str: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def read_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def staging_prefix(self, final_prefix: str) -> str: ...
    def publish(self, staging: str, final_prefix: str) -> None: ...
    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]: ...
    def check_writable(self) -> None: ...


@dataclass
class LocalStore:
    root: str

    def _path(self, key: str) -> Path:
        return Path(self.root) / key

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def staging_prefix(self, final_prefix: str) -> str:
        return f".staging/{final_prefix.strip('/')}-{uuid.uuid4().hex[:8]}"

    def publish(self, staging: str, final_prefix: str) -> None:
        target = self._path(final_prefix)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(staging), target)

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), str(Path(self.root).resolve())

    def check_writable(self) -> None:
        try:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            probe = Path(self.root) / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"output {self.root!r} is not writable: {exc.strerror or exc}") from exc


@dataclass
class S3Store:
    """``s3://bucket/prefix`` through boto3 (endpoint and credentials from the standard AWS_* variables)."""

    root: str
    bucket: str
    prefix: str
    client: Any

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}".lstrip("/") if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _call(self, action: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise StoreError(f"S3 {action} {self.uri(key)} failed: {code}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 {action} {self.uri(key)} failed: {exc}") from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call(
            "upload",
            key,
            self.client.upload_fileobj,
            Fileobj=io.BytesIO(data),
            Bucket=self.bucket,
            Key=self._key(key),
            ExtraArgs={"ServerSideEncryption": "AES256"},
        )

    def read_bytes(self, key: str) -> bytes:
        answer = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return bytes(answer["Body"].read())

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            code = exc.response.get("Error", {}).get("Code")
            raise StoreError(f"S3 head {self.uri(key)} failed: {code}") from exc

    def list(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        base = self._key(prefix).rstrip("/") + "/"
        keys: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self._call("list", prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=base)))
        for page in pages:
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> None:
        for key in self.list(prefix):
            self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def staging_prefix(self, final_prefix: str) -> str:
        return final_prefix  # no rename on S3: the manifest, written last, is the commit marker

    def publish(self, staging: str, final_prefix: str) -> None:
        if staging != final_prefix:
            raise StoreError("S3 batches are written in place; staging must equal the final prefix")

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str]:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        options: dict[str, Any] = {"region": os.environ.get("AWS_REGION", "us-east-1")}
        if endpoint:
            parsed = urlparse(endpoint)
            options["endpoint_override"] = parsed.netloc or endpoint
            options["scheme"] = parsed.scheme or "https"
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            options["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
            options["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        return pafs.S3FileSystem(**options), f"{self.bucket}/{self.prefix}".rstrip("/")

    def check_writable(self) -> None:
        probe = f".probe-{uuid.uuid4().hex}"
        self.write_bytes(probe, b"")
        self._call("delete", probe, self.client.delete_object, Bucket=self.bucket, Key=self._key(probe))


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60),
    )


def open_store(uri: str) -> Store:
    """A store for a local path or an ``s3://bucket/prefix`` URI."""
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StoreError(f"output {uri!r}: an S3 URI needs a bucket (s3://bucket/prefix)")
        return S3Store(root=uri, bucket=parsed.netloc, prefix=parsed.path.strip("/"), client=s3_client())
    if "://" in uri:
        raise StoreError(f"output {uri!r}: only local paths and s3:// URIs are supported")
    return LocalStore(root=uri)


def batch_prefix(batch_id: str) -> str:
    return f"batch_id={batch_id}"


def read_batch(uri: str, verify: bool = True) -> pa.Table:
    """A published batch as one contract table: ``<root>/batch_id=<id>`` (local or ``s3://``).

    Only batches with a ``manifest.json`` are read (an unpublished or failed batch has none), every file
    the manifest lists is read, and with ``verify`` each file's SHA256 must equal the manifest's, so a
    truncated or tampered file fails loudly instead of silently shortening the data.
    """
    import hashlib
    import json

    from fraudgen.schema import TRANSACTION_SCHEMA

    store = open_store(uri.rstrip("/"))
    if not store.exists(MANIFEST):
        raise StoreError(
            f"{uri}: no {MANIFEST}: not a published batch (missing, still being written, or failed)"
        )
    manifest = json.loads(store.read_bytes(MANIFEST))
    tables = []
    for entry in manifest["files"]:
        data = store.read_bytes(entry["path"])
        if verify and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise StoreError(
                f"{store.uri(entry['path'])}: SHA256 differs from {MANIFEST} (corrupt or modified)"
            )
        tables.append(decode_part(entry["path"], data))
    table = pa.concat_tables(tables) if tables else TRANSACTION_SCHEMA.empty_table()
    if table.num_rows != manifest["rows"]:
        raise StoreError(f"{uri}: {table.num_rows} rows read, {MANIFEST} says {manifest['rows']}")
    return table


def decode_part(name: str, data: bytes) -> pa.Table:
    """One data file of a batch as a contract table: Parquet, or CSV (typed by the contract, not guessed)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from fraudgen.schema import TRANSACTION_SCHEMA, conform

    if name.endswith(".csv"):
        types = {f.name: f.type for f in TRANSACTION_SCHEMA}
        options = pacsv.ConvertOptions(column_types=types)
        return conform(pacsv.read_csv(io.BytesIO(data), convert_options=options))
    return conform(pq.read_table(io.BytesIO(data)))
