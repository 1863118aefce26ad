"""The TLS listener over real loopback sockets: trio's SSLStream, pymemcache's
``tls_context`` and starlingpy.client as clients; mutual TLS with a CA made
here; bad certificates, plain text and a stalled handshake."""

from __future__ import annotations

import logging
import ssl

import pytest
import trio
from pymemcache.client.base import Client as MemcacheClient

from starlingpy.auth import AuthFile, hash_password
from starlingpy.client import Client
from starlingpy.tls import TlsFiles, TlsListener
from tests.integration.conftest import RawClient, start_server
from tests.tls_support import TestCA


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path / "ca")


async def tls_server(nursery, tmp_path, ca, *, mutual=False, auth_text=None, handshake_timeout=10.0):
    server_cert = ca.issue("server", server=True)
    files = TlsFiles(server_cert.cert, server_cert.key, ca.cert if mutual else None)
    options = {"tls": TlsListener(files, handshake_timeout=handshake_timeout)}
    if auth_text is not None:
        (tmp_path / "auth").write_text(auth_text)
        options["auth"] = AuthFile(tmp_path / "auth")
    return await start_server(nursery, tmp_path / "spool", **options)


async def tls_connect(running, context: ssl.SSLContext) -> RawClient:
    tcp = await trio.open_tcp_stream(running.host, running.port)
    stream = trio.SSLStream(tcp, context, server_hostname="127.0.0.1")
    await stream.do_handshake()
    return RawClient(stream)


async def test_commands_round_trip_over_tls(nursery, tmp_path, ca):
    running = await tls_server(nursery, tmp_path, ca)
    client = await tls_connect(running, ca.client_context())
    assert await client.call(b"set jobs 7 0 5\r\nhello\r\n") == b"STORED\r\n"
    assert await client.call(b"get jobs\r\n", b"END\r\n") == b"VALUE jobs 7 5\r\nhello\r\nEND\r\n"
    # Large items and a pipelined batch: many TLS records each way, replies
    # larger than the socket buffer (the send path's partial writes).
    big = bytes(range(256)) * 8192  # 2 MiB
    batch = b"".join(b"set big 0 0 %d\r\n%s\r\n" % (len(big), big) for _ in range(3))
    await client.send(batch + b"get big\r\nget big\r\nget big\r\n")
    assert await client.read_until(b"STORED\r\nSTORED\r\nSTORED\r\n") == b"STORED\r\n" * 3
    for _ in range(3):
        header = await client.read_until(b"\r\n")
        assert header == b"VALUE big 0 %d\r\n" % len(big)
        assert await client.read_exactly(len(big) + 7) == big + b"\r\nEND\r\n"


async def test_plain_text_to_the_tls_port_is_closed_unanswered(nursery, tmp_path, ca, caplog):
    running = await tls_server(nursery, tmp_path, ca)
    plain = await running.connect()
    with caplog.at_level(logging.WARNING, logger="starlingpy.tls"):
        await plain.send(b"get jobs\r\nstats\r\n")
        reply = await plain.read_eof()
    assert b"END" not in reply and b"ERROR" not in reply and b"STAT" not in reply
    assert "TLS handshake failed" in caplog.text


async def test_a_stalled_handshake_costs_other_clients_nothing_and_times_out(nursery, tmp_path, ca, caplog):
    running = await tls_server(nursery, tmp_path, ca, handshake_timeout=1.0)
    stalled = await running.connect()
    await stalled.send(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
    with caplog.at_level(logging.WARNING, logger="starlingpy.tls"):
        worker = await tls_connect(running, ca.client_context())
        for i in range(20):
            assert await worker.call(b"set q 0 0 2\r\n%02d\r\n" % i) == b"STORED\r\n"
            assert await worker.call(b"get q\r\n", b"END\r\n") == b"VALUE q 0 2\r\n%02d\r\nEND\r\n" % i
        assert await stalled.read_eof(timeout=10) == b""
    assert "TLS handshake timed out" in caplog.text


async def test_mutual_tls_accepts_the_ca_clients_and_refuses_others(nursery, tmp_path, ca, caplog):
    running = await tls_server(nursery, tmp_path, ca, mutual=True)
    good = await tls_connect(running, ca.client_context(ca.issue("worker1")))
    assert await good.call(b"set q 0 0 1\r\nx\r\n") == b"STORED\r\n"

    other_ca = TestCA(tmp_path / "other", name="someone else's CA")
    refused = {
        "no certificate": ca.client_context(),
        "expired": ca.client_context(ca.issue("old", expired=True)),
        "another CA": ca.client_context(other_ca.issue("intruder")),
    }
    with caplog.at_level(logging.WARNING, logger="starlingpy.tls"):
        for why, context in refused.items():
            # TLS 1.3: the client may finish its side before the server's
            # verdict arrives; the verdict then ends the connection.
            with pytest.raises((trio.BrokenResourceError, EOFError)):
                client = await tls_connect(running, context)
                await client.call(b"get q\r\n", b"END\r\n")
            assert why  # (named for the failure message)
    assert "certificate has expired" in caplog.text
    assert caplog.text.count("TLS handshake failed") >= 3
    assert await good.call(b"get q\r\n", b"END\r\n") == b"VALUE q 0 1\r\nx\r\nEND\r\n"


async def test_a_client_certificate_stands_for_its_user(nursery, tmp_path, ca):
    auth_text = (f"worker1 - get=grading*\n"
                 f"web {hash_password('pw', n=1024)} set=grading*\n")
    running = await tls_server(nursery, tmp_path, ca, mutual=True, auth_text=auth_text)
    worker = await tls_connect(running, ca.client_context(ca.issue("worker1")))
    assert await worker.call(b"get grading\r\n", b"END\r\n") == b"END\r\n"  # no password needed
    assert await worker.call(b"set grading 0 0 1\r\nx\r\n") == b"CLIENT_ERROR permission denied\r\n"
    # A certificate naming nobody in the file: it still has to log in.
    web = await tls_connect(running, ca.client_context(ca.issue("web-frontend")))
    assert await web.call(b"set grading 0 0 1\r\nx\r\n") == b"CLIENT_ERROR authentication failure\r\n"
    assert await web.call(b"set auth 0 0 6\r\nweb pw\r\n") == b"STORED\r\n"
    assert await web.call(b"set grading 0 0 1\r\nx\r\n") == b"STORED\r\n"


async def test_certificates_reload_without_dropping_connections(nursery, tmp_path, ca, caplog):
    running = await tls_server(nursery, tmp_path, ca)
    before = await tls_connect(running, ca.client_context())
    new_ca = TestCA(tmp_path / "new-ca", name="the new CA")
    new_cert = new_ca.issue("server", server=True)
    tls = running.server.tls
    tls.files = TlsFiles(new_cert.cert, new_cert.key)
    assert tls.reload()
    assert await before.call(b"set q 0 0 1\r\nx\r\n") == b"STORED\r\n"  # still served
    after = await tls_connect(running, new_ca.client_context())
    assert await after.call(b"get q\r\n", b"END\r\n") == b"VALUE q 0 1\r\nx\r\nEND\r\n"
    with pytest.raises(trio.BrokenResourceError):
        await tls_connect(running, ca.client_context())  # the old certificate is gone

    new_cert.key.write_text("not a key")
    with caplog.at_level(logging.ERROR, logger="starlingpy.tls"):
        assert not tls.reload()
    assert "TLS certificates not reloaded" in caplog.text
    again = await tls_connect(running, new_ca.client_context())  # the loaded one stays
    assert await again.call(b"version\r\n")


async def test_pymemcache_tls_context_and_the_starlingpy_client(nursery, tmp_path, ca):
    auth_text = f"app {hash_password('s3cret', n=1024)} get,set=*\n"
    running = await tls_server(nursery, tmp_path, ca, auth_text=auth_text)

    def with_pymemcache():
        mc = MemcacheClient((running.host, running.port), tls_context=ca.client_context(), timeout=10)
        try:
            assert mc.set("auth", b"app s3cret", noreply=False)  # memcached's text-protocol login
            assert mc.set("jobs", b"from pymemcache", noreply=False)
            return mc.get("jobs")
        finally:
            mc.close()

    def with_our_client():
        client = Client([f"{running.host}:{running.port}"], username="app", password="s3cret",
                        tls=ca.client_context())
        try:
            client.set("jobs", {"n": 1})
            first = client.get("jobs")
            client.close()  # a new connection must log in again
            client.set("jobs", {"n": 2})
            return first, client.get("jobs")
        finally:
            client.close()

    assert await trio.to_thread.run_sync(with_pymemcache) == b"from pymemcache"
    assert await trio.to_thread.run_sync(with_our_client) == ({"n": 1}, {"n": 2})


async def test_the_idle_timeout_applies_over_tls(nursery, tmp_path, ca):
    server_cert = ca.issue("server", server=True)
    running = await start_server(nursery, tmp_path / "spool", idle_timeout=0.3,
                                 tls=TlsListener(TlsFiles(server_cert.cert, server_cert.key)))
    client = await tls_connect(running, ca.client_context())
    assert await client.call(b"set q 0 0 1\r\nx\r\n") == b"STORED\r\n"
    with pytest.raises((trio.BrokenResourceError, EOFError)):
        await client.read_eof(timeout=10)  # closed by the server once idle
