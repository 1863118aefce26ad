"""Authentication and per-user rights over real loopback sockets."""

from __future__ import annotations

import logging

import pytest

from starlingpy.auth import AuthFile, AuthFileError, hash_password, parse_auth_file
from tests.integration.conftest import start_server

# Cheap hashes keep the suite fast; the format and code path are the real ones.
FAST = {"n": 1024}


def auth_file_text() -> str:
    return "\n".join([
        "# test users",
        f"web    {hash_password('web-secret', **FAST)}    set=grading*",
        f"grader {hash_password('grader pass', **FAST)}   get=grading* set=results*",
        f"ops    {hash_password('ops-secret', **FAST)}    get,set=* admin",
        "",
    ])


@pytest.fixture
async def secured(nursery, tmp_path):
    path = tmp_path / "auth"
    path.write_text(auth_file_text())
    running = await start_server(nursery, tmp_path / "spool", auth=AuthFile(path),
                                 enable_shutdown=True)
    running.auth_path = path
    yield running
    running.server.request_shutdown()


async def login(client, user: str, password: str) -> bytes:
    data = f"{user} {password}".encode()
    return await client.call(b"set auth 0 0 %d\r\n%s\r\n" % (len(data), data))


async def test_commands_before_authentication_are_refused(secured):
    client = await secured.connect()
    for line in (b"get grading\r\n", b"stats\r\n", b"version\r\n", b"delete grading\r\n"):
        assert await client.call(line) == b"CLIENT_ERROR unauthenticated\r\n"
    assert await login(client, "web", "web-secret") == b"STORED\r\n"
    assert (await client.call(b"version\r\n")).startswith(b"VERSION ")


async def test_login_is_a_set_and_nothing_is_stored_by_it(secured):
    client = await secured.connect()
    assert await login(client, "grader", "grader pass") == b"STORED\r\n"  # a password with a space
    assert await client.call(b"get auth\r\n") == b"CLIENT_ERROR permission denied\r\n"
    assert secured.collection.get(b"auth") is None


async def test_wrong_password_and_unknown_user_fail_and_are_logged(secured, caplog):
    client = await secured.connect()
    with caplog.at_level(logging.WARNING, logger="starlingpy.auth"):
        assert await login(client, "web", "wrong") == b"CLIENT_ERROR authentication failure\r\n"
        assert await login(client, "nobody", "web-secret") == b"CLIENT_ERROR authentication failure\r\n"
    assert await client.call(b"get grading\r\n") == b"CLIENT_ERROR unauthenticated\r\n"
    failures = [r.getMessage() for r in caplog.records if "authentication failure" in r.getMessage()]
    assert len(failures) == 2
    assert all("127.0.0.1:" in message for message in failures)  # the peer address
    assert await login(client, "web", "web-secret") == b"STORED\r\n"  # still usable


async def test_five_failures_close_the_connection(secured):
    client = await secured.connect()
    for _ in range(4):
        assert await login(client, "web", "nope") == b"CLIENT_ERROR authentication failure\r\n"
    data = b"web nope"
    await client.send(b"set auth 0 0 %d\r\n%s\r\n" % (len(data), data))
    assert await client.read_eof() == b"CLIENT_ERROR authentication failure\r\n"


async def test_rights_follow_the_patterns(secured):
    web = await secured.connect()
    assert await login(web, "web", "web-secret") == b"STORED\r\n"
    assert await web.call(b"set grading.python 0 0 2\r\nhi\r\n") == b"STORED\r\n"
    denied = b"CLIENT_ERROR permission denied\r\n"
    assert await web.call(b"set results 0 0 2\r\nhi\r\n") == denied
    assert await web.call(b"get grading.python\r\n") == denied
    assert await web.call(b"get grading.python/open\r\n") == denied
    assert await web.call(b"get grading.python/peek\r\n") == denied
    assert await web.call(b"delete grading.python\r\n") == denied
    assert await web.call(b"flush grading.python\r\n") == denied
    assert await web.call(b"flush_all\r\n") == denied
    assert await web.call(b"shutdown\r\n") == denied
    assert await web.call(b"set grading.python 0 0 2\r\nok\r\n") == b"STORED\r\n"  # still usable

    grader = await secured.connect()
    assert await login(grader, "grader", "grader pass") == b"STORED\r\n"
    assert await grader.call(b"get grading.python/open\r\n", b"END\r\n") == \
        b"VALUE grading.python/open 0 2\r\nhi\r\nEND\r\n"
    assert await grader.call(b"get grading.python/close\r\n", b"END\r\n") == b"END\r\n"
    # Every alternative of a|b must be allowed.
    assert await grader.call(b"get grading.python|results\r\n") == denied
    assert await grader.call(b"set results 0 0 2\r\nok\r\n") == b"STORED\r\n"
    assert secured.collection.get(b"results").statistics().items == 1


async def test_admin_may_delete_and_flush(secured):
    ops = await secured.connect()
    assert await login(ops, "ops", "ops-secret") == b"STORED\r\n"
    assert await ops.call(b"set anything 0 0 1\r\nx\r\n") == b"STORED\r\n"
    assert await ops.call(b"flush anything\r\n") == b"END\r\n"
    assert await ops.call(b"delete anything\r\n") == b"DELETED\r\n"


async def test_stats_shows_only_the_queues_a_user_may_see(secured):
    ops = await secured.connect()
    await login(ops, "ops", "ops-secret")
    for name in (b"grading.a", b"results", b"secret"):
        assert await ops.call(b"set %s 0 0 1\r\nx\r\n" % name) == b"STORED\r\n"
    web = await secured.connect()
    await login(web, "web", "web-secret")
    web_stats = await web.call(b"stats\r\n", b"END\r\n")
    assert b"STAT queue_grading.a_items 1" in web_stats
    assert b"queue_results" not in web_stats and b"queue_secret" not in web_stats
    assert b"STAT curr_items 1\r\n" in web_stats  # totals over what it sees, not a leak
    ops_stats = await ops.call(b"stats\r\n", b"END\r\n")
    assert all(b"queue_%s_items" % n in ops_stats for n in (b"grading.a", b"results", b"secret"))


async def test_reload_takes_a_good_file_and_refuses_a_bad_one(secured, caplog):
    auth = secured.server.auth
    secured.auth_path.write_text(f"newbie {hash_password('fresh', **FAST)} set=x*\n")
    assert auth.reload()
    client = await secured.connect()
    assert await login(client, "web", "web-secret") == b"CLIENT_ERROR authentication failure\r\n"
    assert await login(client, "newbie", "fresh") == b"STORED\r\n"
    secured.auth_path.write_text("# fine\nbroken-line-without-hash\n")
    with caplog.at_level(logging.ERROR, logger="starlingpy.auth"):
        assert not auth.reload()
    assert f"{secured.auth_path}:2:" in caplog.text
    other = await secured.connect()
    assert await login(other, "newbie", "fresh") == b"STORED\r\n"  # the old file stays


async def test_a_user_removed_by_a_reload_loses_its_rights_at_once(secured):
    client = await secured.connect()
    await login(client, "web", "web-secret")
    secured.auth_path.write_text(f"ops {hash_password('x', **FAST)} admin\n")
    assert secured.server.auth.reload()
    assert await client.call(b"set grading 0 0 1\r\nx\r\n") == b"CLIENT_ERROR permission denied\r\n"


@pytest.mark.parametrize("line, problem", [
    ("web", "expected: USER HASH"),
    ("web plain-text-password set=*", "password hash must be scrypt"),
    ("web scrypt$3$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA== set=*", "scrypt parameters out of range"),
    ("web - write", "bad grant"),
    ("web - write=*", "unknown right 'write'"),
    ("we/b - set=*", "bad user name"),
])
def test_a_bad_auth_file_names_its_line(line, problem):
    with pytest.raises(AuthFileError) as caught:
        parse_auth_file(f"# header\n\n{line}\n", "users.auth")
    assert str(caught.value).startswith("users.auth:3: ")
    assert problem in str(caught.value)


def test_a_user_listed_twice_is_refused():
    with pytest.raises(AuthFileError, match=r"f:2: user 'a' listed twice"):
        parse_auth_file("a - set=x\na - get=x\n", "f")


async def test_the_client_logs_in_only_where_asked_and_reports_a_refusal(secured, nursery, tmp_path):
    import trio

    from starlingpy.client import AuthenticationFailed, Client

    open_server = await start_server(nursery, tmp_path / "open-spool")

    def run() -> tuple:
        address = f"{secured.host}:{secured.port}"
        with Client([address], username="ops", password="ops-secret") as client:
            client.set("jobs", {"n": 1})
            got = client.get("jobs")
        refusals = []
        for options in ({"username": "ops", "password": "bad"}, {"username": ""}):
            client = Client([address], **options)
            try:
                client.set("jobs", {"n": 2})
            except AuthenticationFailed as error:
                refusals.append(str(error))
            finally:
                client.close()
        # A server without --auth-file never receives the password.
        with Client([f"{open_server.host}:{open_server.port}"], username="ops", password="ops-secret") as client:
            client.set("jobs", {"n": 3})
        return got, refusals

    got, refusals = await trio.to_thread.run_sync(run)
    assert got == {"n": 1}
    assert "authentication failure" in refusals[0]
    assert "requires authentication and no credentials" in refusals[1]
    assert open_server.collection.get(b"auth") is None
    assert open_server.collection.get(b"jobs").statistics().items == 1
    open_server.server.request_shutdown()


def test_credentials_from_a_file_and_the_environment(tmp_path):
    from starlingpy.client import Credentials, CredentialsError

    file = tmp_path / "creds.toml"
    file.write_text('username = "grader"\npassword = "from file"\n')
    found = Credentials.from_environment({"STARLINGPY_CREDENTIALS": str(file),
                                          "STARLINGPY_PASSWORD": "from env"})
    assert (found.username, found.password, found.tls) == ("grader", "from env", None)
    file.write_text('username = "grader"\npasword = "typo"\n')
    with pytest.raises(CredentialsError, match="unknown key 'pasword'"):
        Credentials.from_environment({"STARLINGPY_CREDENTIALS": str(file)})
    assert Credentials.from_environment({}) == Credentials()
