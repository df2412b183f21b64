"""HTTPS and WSS on the service port (``--certfile``/``--keyfile``), with a self-signed CA.

The official Python server SDK, httpx and websockets all connect once the CA is trusted; a
TLS handshake that never comes is cut like a slow request.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from tests.conftest import ACCESS_KEY
from tests.hardening.process import ServiceProcess
from tests.server.helpers import TIMEOUT, client_token, rest_url, sign_rest
from webpubsub.server.config import Limits, Settings, Tls
from webpubsub.testing import ServiceThread

HUB = "secure"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("webpubsub test CA"))
        .issuer_name(_name("webpubsub test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture(scope="module")
def secure(certificates: Certificates) -> Iterator[ServiceThread]:
    settings = Settings(
        port=0,
        access_keys=[ACCESS_KEY],
        tls=Tls(str(certificates.cert), str(certificates.key)),
        limits=Limits(request_timeout=0.5),
    )
    with ServiceThread(settings) as service:
        yield service


def test_endpoint_is_https(secure: ServiceThread) -> None:
    assert secure.endpoint == f"https://127.0.0.1:{secure.settings.port}"
    assert "Endpoint=https://" in secure.connection_string


async def test_rest_and_websocket_over_tls(
    secure: ServiceThread, certificates: Certificates
) -> None:
    context = certificates.context()
    url = client_token(secure, HUB, user_id="alice")
    ws_url = f"wss://127.0.0.1:{secure.settings.port}/client/hubs/{HUB}?access_token={url}"
    async with connect(
        ws_url, ssl=context, subprotocols=["json.webpubsub.azure.v1"], open_timeout=TIMEOUT
    ) as ws:  # type: ignore[list-item]
        connected = json.loads(await ws.recv())
        assert connected["userId"] == "alice"
        send = rest_url(secure, f"/api/hubs/{HUB}/users/alice/:send")
        async with httpx.AsyncClient(verify=context) as http:
            response = await http.post(
                send,
                content=b"over tls",
                headers={
                    "Authorization": f"Bearer {sign_rest(send)}",
                    "Content-Type": "text/plain",
                },
            )
        assert response.status_code == 202
        message = json.loads(await ws.recv())
        assert message["data"] == "over tls"


def test_official_python_sdk_with_the_ca_trusted(
    secure: ServiceThread, certificates: Certificates
) -> None:
    client = WebPubSubServiceClient.from_connection_string(
        secure.connection_string, hub=HUB, connection_verify=str(certificates.ca)
    )
    client.send_to_all("hello", content_type="text/plain")
    token = client.get_client_access_token(user_id="sdk")
    assert token["url"].startswith(f"wss://127.0.0.1:{secure.settings.port}/client/hubs/")
    assert client.user_exists("sdk") is False


def test_untrusted_certificate_is_refused_by_clients(secure: ServiceThread) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.head(f"{secure.endpoint}/api/health", timeout=TIMEOUT)


def test_plain_http_on_the_tls_port_gets_nothing(secure: ServiceThread) -> None:
    with socket.create_connection(("127.0.0.1", secure.settings.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")


def test_tls_handshake_that_never_comes_is_cut(secure: ServiceThread) -> None:
    with socket.create_connection(("127.0.0.1", secure.settings.port), timeout=TIMEOUT) as sock:
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(65536) == b""
        assert 0.4 < time.monotonic() - started < 0.5 + 3


def test_cli_flags(certificates: Certificates) -> None:
    args = ["--access-key", ACCESS_KEY, "--certfile", str(certificates.cert)]
    with ServiceProcess(*args, "--keyfile", str(certificates.key)) as process:
        assert process.endpoint.startswith("https://127.0.0.1:")
        response = httpx.head(
            f"{process.endpoint}/api/health", verify=certificates.context(), timeout=TIMEOUT
        )
        assert response.status_code == 200
    only_cert = ServiceProcess(*args)
    with pytest.raises(AssertionError, match="did not start"):
        only_cert.start()
    assert "both a certificate file and a key file" in only_cert.stderr_text
