"""End-to-end check of alert delivery over TLS: the real `cognitude` binary against real SMTP
servers (aiosmtpd) and an HTTPS webhook receiver, all on loopback, whose certificates a private
certificate authority signed (made here with trustme) that the proxy trusts through
`[alerts] extra_root_certificates`.

    python tests/sdk/test_alerts_email.py PATH/TO/cognitude

The script starts its own `cognitude serve` (SQLite in a temporary folder, an admin key, no
upstream: the built-in mock) and these receivers:

- an SMTP server that requires STARTTLS and then AUTH;
- an SMTP server that speaks TLS from the first byte (SMTPS) and requires AUTH;
- an SMTPS server whose certificate another authority signed, which the proxy must refuse;
- an HTTPS server taking signed webhooks.

It creates an organization and a key through the admin API, email and webhook channels through
`POST /alerts/channels`, sends test messages with `POST /alerts/channels/{id}/test`, and reads
what arrived. Every `check_*` function runs in file order; each prints `ok NAME` or
`FAIL NAME: error`, and the last line is `alerts: N passed, N failed`. The exit status is 1
when any check failed. scripts/test runs it after the OpenAI SDK check and adds its counts.
"""

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# aiosmtpd warns about AUTH without STARTTLS on the SMTPS server (where TLS comes first) and
# about its own use of a deprecated attribute; neither is about this check.
warnings.filterwarnings("ignore", module="aiosmtpd")
logging.getLogger("mail.log").setLevel(logging.ERROR)

ADMIN_KEY = "adm-alerts-check-0123456789"
OPERATOR_FROM = "Cognitude Alerts <alerts@cognitude.test>"
ORG_NAME = "acme-alerts"
WEBHOOK_SECRET = "whsec-alerts-check-0123456789"
# What the test message says (crates/alerts/src/render.rs, test_message).
TEST_LINE = "This is a test from Cognitude"


# --- Receivers -----------------------------------------------------------------------------------


class Mailbox:
    """What one SMTP server saw: connections, AUTH attempts, and the messages it accepted."""

    def __init__(self, name, user, password):
        self.name = name
        self.user = user
        self.password = password
        self.connections = 0
        self.auth_attempts = []  # (mechanism, login, accepted, over TLS)
        self.messages = []  # dicts: mail_from, rcpt_tos, content, tls, tls_version, login
        self.lock = threading.Lock()

    # aiosmtpd handler hook: called once the whole message has been received.
    async def handle_DATA(self, server, session, envelope):
        ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        login = session.auth_data.login.decode() if session.auth_data else None
        with self.lock:
            self.messages.append(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": list(envelope.rcpt_tos),
                    "content": bytes(envelope.original_content or envelope.content),
                    "tls": ssl_object is not None,
                    "tls_version": ssl_object.version() if ssl_object else None,
                    "starttls": session.ssl is not None,
                    "login": login,
                }
            )
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login = password = None
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            password = auth_data.password.decode()
        accepted = login == self.user and password == self.password
        over_tls = (
            server.transport is not None
            and server.transport.get_extra_info("ssl_object") is not None
        )
        with self.lock:
            self.auth_attempts.append((mechanism, login, accepted, over_tls))
        if not accepted:
            # Not handled: aiosmtpd answers 535 itself.
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data)

    def snapshot(self):
        with self.lock:
            return list(self.messages), list(self.auth_attempts), self.connections


class SmtpServers:
    """aiosmtpd servers on ephemeral loopback ports, served by one event loop in a thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.servers = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def start(self, mailbox, context, implicit_tls):
        """Serves `mailbox` with `context` as STARTTLS (implicit_tls False) or SMTPS; returns
        the port."""

        def factory():
            mailbox.connections += 1
            if implicit_tls:
                # TLS from the first byte: aiosmtpd only counts STARTTLS as TLS for
                # auth_require_tls, so AUTH is allowed here and checked by the handler's record.
                return SMTP(
                    mailbox,
                    hostname="smtp.test",
                    auth_required=True,
                    auth_require_tls=False,
                    authenticator=mailbox.authenticate,
                )
            return SMTP(
                mailbox,
                hostname="smtp.test",
                tls_context=context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                authenticator=mailbox.authenticate,
            )

        async def serve():
            return await self.loop.create_server(
                factory, "127.0.0.1", 0, ssl=context if implicit_tls else None
            )

        server = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    def close(self):
        async def stop():
            for s in self.servers:
                s.close()
                await s.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class WebhookReceiver:
    """An HTTPS server recording every POST (headers and body)."""

    def __init__(self, context):
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.requests.append((self.path, dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def server_context(ca):
    """A server TLS context with a certificate for localhost and 127.0.0.1 that `ca` signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)
    return ctx


# --- The proxy -----------------------------------------------------------------------------------


class Proxy:
    """`cognitude serve` on an ephemeral port, its output collected."""

    def __init__(self, binary, config_path):
        env = {
            k: v
            for k, v in os.environ.items()
            if not (k.startswith("COGNITUDE_") or k.endswith("_API_KEY") or k == "RUST_LOG")
        }
        self.output = []
        self.process = subprocess.Popen(
            [binary, "--config", config_path, "serve"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self.address = None
        found = threading.Event()

        def read():
            for line in self.process.stdout:
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # the log's colours
                self.output.append(line.rstrip("\n"))
                m = re.search(r"listening on http://(\S+)", line)
                if m and self.address is None:
                    self.address = m.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not found.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    "cognitude did not start:\n    " + "\n    ".join(self.output[-20:])
                )
        self.base = f"http://{self.address}"

    def request(self, method, path, key, body=None):
        """Returns (status, parsed JSON body or None, raw text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("authorization", f"Bearer {key}")
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, raw = resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read().decode()
        try:
            parsed = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            parsed = None
        return status, parsed, raw

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


# --- Fixture shared by the checks ----------------------------------------------------------------


class World:
    pass


w = World()


def toml_string(s):
    return json.dumps(s)


def write_config(path, extra_roots, tmp, listen="127.0.0.1:0"):
    roots = ", ".join(toml_string(p) for p in extra_roots)
    text = f"""
[server]
listen = {toml_string(listen)}

[log]
level = "info"

[database]
url = {toml_string("sqlite://" + os.path.join(tmp, "cognitude.db"))}

[ledger]
spill_path = {toml_string(os.path.join(tmp, "ledger.spill"))}

[auth]
admin_key = {toml_string(ADMIN_KEY)}

[alerts]
allow_hosts = ["127.0.0.1", "localhost"]
email_from = {toml_string(OPERATOR_FROM)}
extra_root_certificates = [{roots}]
connect_timeout_ms = 5000
request_timeout_ms = 15000
"""
    with open(path, "w") as f:
        f.write(text)


def setup(binary):
    w.binary = binary
    w.tmp = tempfile.mkdtemp(prefix="cognitude-alerts-")
    w.ca = trustme.CA()
    w.ca_path = os.path.join(w.tmp, "private-ca.pem")
    w.ca.cert_pem.write_to_path(w.ca_path)
    other_ca = trustme.CA()

    w.smtp = SmtpServers()
    w.starttls = Mailbox("starttls", "alerts-starttls", "s3cret-starttls-pass")
    w.starttls_port = w.smtp.start(w.starttls, server_context(w.ca), implicit_tls=False)
    w.smtps = Mailbox("smtps", "alerts-smtps", "s3cret-smtps-pass")
    w.smtps_port = w.smtp.start(w.smtps, server_context(w.ca), implicit_tls=True)
    w.untrusted = Mailbox("untrusted", "alerts-untrusted", "s3cret-untrusted-pass")
    w.untrusted_port = w.smtp.start(w.untrusted, server_context(other_ca), implicit_tls=True)
    w.webhook = WebhookReceiver(server_context(w.ca))

    w.config_path = os.path.join(w.tmp, "cognitude.toml")
    write_config(w.config_path, [w.ca_path], w.tmp)
    w.proxy = Proxy(binary, w.config_path)

    status, org, raw = w.proxy.request("POST", "/admin/orgs", ADMIN_KEY, {"name": ORG_NAME})
    if status != 201:
        raise RuntimeError(f"POST /admin/orgs answered {status}: {raw}")
    w.org_id = org["id"]
    status, created, raw = w.proxy.request(
        "POST", f"/admin/orgs/{w.org_id}/keys", ADMIN_KEY, {"name": "alerts-check"}
    )
    if status != 201:
        raise RuntimeError(f"POST /admin/orgs/{w.org_id}/keys answered {status}: {raw}")
    w.key = created["secret"]
    w.channels = {}
    w.outcomes = {}


def teardown():
    if hasattr(w, "proxy"):
        w.proxy.stop()
    if hasattr(w, "webhook"):
        w.webhook.close()
    if hasattr(w, "smtp"):
        w.smtp.close()
    if hasattr(w, "tmp"):
        shutil.rmtree(w.tmp, ignore_errors=True)


# --- Helpers -------------------------------------------------------------------------------------


def email_channel(name, port, tls, user, password, to, sender=None, host="127.0.0.1"):
    config = {
        "to": to,
        "smtp": {"host": host, "port": port, "tls": tls, "username": user, "password": password},
    }
    if sender:
        config["from"] = sender
    return {"name": name, "kind": "email", "config": config}


def create_channel(body, secret):
    status, channel, raw = w.proxy.request("POST", "/alerts/channels", w.key, body)
    assert status == 201, f"POST /alerts/channels answered {status}: {raw}"
    assert secret not in raw, "the channel API returned the secret"
    w.channels[body["name"]] = channel
    return channel


def send_test(name):
    """POST /alerts/channels/{id}/test for a channel created before; returns the outcome."""
    channel_id = w.channels[name]["id"]
    status, outcome, raw = w.proxy.request("POST", f"/alerts/channels/{channel_id}/test", w.key)
    assert status == 200, f"the test endpoint answered {status}: {raw}"
    w.outcomes[name] = outcome
    return outcome


def wait_for_messages(mailbox, count, seconds=5):
    deadline = time.monotonic() + seconds
    while True:
        messages, _, _ = mailbox.snapshot()
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def parse(message):
    return email.message_from_bytes(message["content"], policy=email.policy.default)


def expect_message(mailbox, channel_name, sender_header, sender_addr, to):
    messages = wait_for_messages(mailbox, 1)
    assert len(messages) == 1, f"{mailbox.name} received {len(messages)} messages"
    m = messages[0]
    assert m["mail_from"] == sender_addr, f"MAIL FROM {m['mail_from']!r}"
    assert sorted(m["rcpt_tos"]) == sorted(to), f"RCPT TO {m['rcpt_tos']!r}"
    msg = parse(m)
    assert str(msg["From"]) == sender_header, f"From: {msg['From']!r}"
    assert sorted(a.addr_spec for a in msg["To"].addresses) == sorted(to), f"To: {msg['To']!r}"
    subject = str(msg["Subject"])
    assert subject == f"[Cognitude] Test message for {ORG_NAME}", f"Subject: {subject!r}"
    assert msg["Date"], "no Date header"
    # The firing id the test endpoint answered, at the sender's domain.
    firing_id = w.outcomes[channel_name]["firing_id"]
    domain = sender_addr.split("@")[1]
    assert msg["Message-ID"] == f"<{firing_id}@{domain}>", f"Message-ID: {msg['Message-ID']!r}"
    assert msg.get_content_type() == "multipart/alternative", (
        f"Content-Type {msg.get_content_type()}"
    )
    parts = [p for p in msg.iter_parts()]
    types = [p.get_content_type() for p in parts]
    assert types == ["text/plain", "text/html"], f"parts {types}"
    plain = parts[0].get_content()
    html = parts[1].get_content()
    assert f"Test message for {ORG_NAME}" in plain, f"text part: {plain!r}"
    assert TEST_LINE in plain and f'channel "{channel_name}"' in plain, f"text part: {plain!r}"
    assert TEST_LINE in html and f"channel &quot;{channel_name}&quot;" in html, (
        f"HTML part: {html!r}"
    )
    assert "<html" in html.lower() and "</p>" in html, f"HTML part is not HTML: {html!r}"


def expect_delivered(name):
    outcome = send_test(name)
    assert outcome["delivered"] is True, f"not delivered: {outcome}"
    attempts = outcome["attempts"]
    assert len(attempts) == 1 and attempts[0]["status"] == "ok", f"attempts {attempts}"
    assert attempts[0]["channel_id"] == w.channels[name]["id"], f"attempts {attempts}"


def expect_tls_and_auth(mailbox, starttls):
    messages = wait_for_messages(mailbox, 1)
    assert messages, f"{mailbox.name} received nothing"
    m = messages[0]
    assert m["tls"], "the message was sent without TLS"
    assert m["tls_version"] in ("TLSv1.2", "TLSv1.3"), f"TLS version {m['tls_version']}"
    assert m["starttls"] == starttls, f"STARTTLS used: {m['starttls']}, expected {starttls}"
    assert m["login"] == mailbox.user, f"authenticated as {m['login']!r}"
    _, attempts, _ = mailbox.snapshot()
    assert attempts, "no AUTH"
    assert all(over_tls for *_, over_tls in attempts), f"AUTH before TLS: {attempts}"
    assert [a[:3] for a in attempts] == [(attempts[0][0], mailbox.user, True)], (
        f"AUTH attempts {attempts}"
    )


# --- Checks --------------------------------------------------------------------------------------


def check_config_refuses_a_missing_or_bad_ca_file():
    bad_pem = os.path.join(w.tmp, "bad.pem")
    with open(bad_pem, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    for roots, named in (
        ([os.path.join(w.tmp, "missing-ca.pem")], "missing-ca.pem"),
        ([w.ca_path, bad_pem], "bad.pem"),
    ):
        path = os.path.join(w.tmp, "bad.toml")
        write_config(path, roots, w.tmp)
        out = subprocess.run(
            [w.binary, "--config", path, "check-config"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0, f"check-config accepted {roots}"
        assert "alerts.extra_root_certificates" in out.stderr, f"stderr: {out.stderr!r}"
        assert named in out.stderr, f"stderr does not name {named}: {out.stderr!r}"
    out = subprocess.run(
        [w.binary, "--config", w.config_path, "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"check-config refused the good file: {out.stderr!r}"
    assert "alerts: 1 extra root certificates trusted" in out.stdout, f"stdout: {out.stdout!r}"


def check_email_channels_never_show_their_passwords():
    create_channel(
        email_channel(
            "finance starttls",
            w.starttls_port,
            "starttls",
            w.starttls.user,
            w.starttls.password,
            ["cfo@acme.test", "ops@acme.test"],
            sender="Acme Finance <finance@acme.test>",
        ),
        w.starttls.password,
    )
    create_channel(
        email_channel(
            "ops smtps",
            w.smtps_port,
            "tls",
            w.smtps.user,
            w.smtps.password,
            ["ops@acme.test"],
            host="localhost",
        ),
        w.smtps.password,
    )
    create_channel(
        email_channel(
            "untrusted smtps",
            w.untrusted_port,
            "tls",
            w.untrusted.user,
            w.untrusted.password,
            ["ops@acme.test"],
        ),
        w.untrusted.password,
    )
    create_channel(
        email_channel(
            "wrong password",
            w.starttls_port,
            "starttls",
            w.starttls.user,
            "not-the-password",
            ["ops@acme.test"],
        ),
        "not-the-password",
    )
    smtp = w.channels["finance starttls"]["config"]["smtp"]
    assert smtp["password_set"] is True and "password" not in smtp, f"smtp shown as {smtp}"
    assert smtp["username"] == w.starttls.user and smtp["tls"] == "starttls", f"smtp {smtp}"
    status, listing, raw = w.proxy.request("GET", "/alerts/channels", w.key)
    assert status == 200, f"GET /alerts/channels answered {status}"
    assert len(listing["data"]) == 4, f"{len(listing['data'])} channels listed"
    for secret in (w.starttls.password, w.smtps.password, w.untrusted.password):
        assert secret not in raw, "GET /alerts/channels returned a password"
    channel_id = w.channels["ops smtps"]["id"]
    status, _, raw = w.proxy.request("GET", f"/alerts/channels/{channel_id}", w.key)
    assert status == 200 and w.smtps.password not in raw, "GET /alerts/channels/{id} leaked"


def check_starttls_test_message_is_delivered():
    expect_delivered("finance starttls")


def check_starttls_message_went_over_tls_with_auth():
    expect_tls_and_auth(w.starttls, starttls=True)


def check_starttls_message_headers_and_parts():
    expect_message(
        w.starttls,
        "finance starttls",
        "Acme Finance <finance@acme.test>",
        "finance@acme.test",
        ["cfo@acme.test", "ops@acme.test"],
    )


def check_implicit_tls_test_message_is_delivered():
    expect_delivered("ops smtps")


def check_implicit_tls_message_went_over_tls_with_auth():
    expect_tls_and_auth(w.smtps, starttls=False)


def check_implicit_tls_message_headers_and_parts():
    # No sender on the channel: the operator's email_from.
    expect_message(w.smtps, "ops smtps", OPERATOR_FROM, "alerts@cognitude.test", ["ops@acme.test"])


def check_certificate_from_an_untrusted_authority_is_refused():
    outcome = send_test("untrusted smtps")
    assert outcome["delivered"] is False, f"delivered to an untrusted server: {outcome}"
    attempts = outcome["attempts"]
    assert len(attempts) == 1 and attempts[0]["status"] == "failed", f"attempts {attempts}"
    error = attempts[0]["error"] or ""
    assert "certificate" in error.lower() or "issuer" in error.lower(), f"error: {error!r}"
    messages, auths, connections = w.untrusted.snapshot()
    assert connections >= 1, "the proxy never reached the untrusted server"
    assert not auths, f"the password was sent to an untrusted server: {auths}"
    assert not messages, f"the untrusted server received {len(messages)} messages"


def check_wrong_password_is_refused():
    before, _, _ = w.starttls.snapshot()
    outcome = send_test("wrong password")
    assert outcome["delivered"] is False, f"delivered with a wrong password: {outcome}"
    error = outcome["attempts"][0]["error"] or ""
    assert "535" in error or "auth" in error.lower(), f"error: {error!r}"
    after, auths, _ = w.starttls.snapshot()
    assert len(after) == len(before), "a message arrived without authentication"
    assert auths[-1][1:3] == (w.starttls.user, False), f"last AUTH {auths[-1]}"


def check_webhook_over_https_with_the_private_authority():
    create_channel(
        {
            "name": "webhook https",
            "kind": "webhook",
            "config": {
                "url": f"https://127.0.0.1:{w.webhook.port}/hooks/cognitude",
                "secret": WEBHOOK_SECRET,
            },
        },
        WEBHOOK_SECRET,
    )
    expect_delivered("webhook https")
    assert len(w.webhook.requests) == 1, f"{len(w.webhook.requests)} webhook requests"
    path, headers, body = w.webhook.requests[0]
    headers = {k.lower(): v for k, v in headers.items()}
    assert path == "/hooks/cognitude", f"path {path}"
    payload = json.loads(body)
    assert payload["type"] == "test" and payload["org_id"] == w.org_id, f"payload {payload}"
    assert payload["subject"] == f"[Cognitude] Test message for {ORG_NAME}", f"payload {payload}"
    assert payload["data"]["channel_name"] == "webhook https", f"payload {payload}"
    t = headers["x-cognitude-timestamp"]
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["x-cognitude-signature"] == f"t={t},v1={mac}", "the signature does not verify"


def check_history_records_every_test():
    status, page, raw = w.proxy.request("GET", "/alerts/history?limit=50", w.key)
    assert status == 200, f"GET /alerts/history answered {status}: {raw}"
    statuses = {}
    for entry in page["data"]:
        for d in entry.get("deliveries", []):
            statuses[d["channel_id"]] = d["status"]
    expected = {
        "finance starttls": "ok",
        "ops smtps": "ok",
        "untrusted smtps": "failed",
        "wrong password": "failed",
        "webhook https": "ok",
    }
    got = {name: statuses.get(w.channels[name]["id"]) for name in expected}
    assert got == expected, f"history: {got}"
    for secret in (w.starttls.password, w.smtps.password, WEBHOOK_SECRET):
        assert secret not in raw, "the history shows a secret"


# --- Runner --------------------------------------------------------------------------------------


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} PATH/TO/cognitude", file=sys.stderr)
        return 2
    if sys.flags.optimize:
        print("run without -O / PYTHONOPTIMIZE: the checks are assert statements", file=sys.stderr)
        return 2
    checks = [(n, f) for n, f in globals().items() if n.startswith("check_") and callable(f)]
    passed = failed = 0
    try:
        try:
            setup(os.path.abspath(argv[1]))
        except Exception as e:  # noqa: BLE001 - reported as a failure, never as a pass
            failed += 1
            print(f"FAIL setup: {type(e).__name__}: {e}")
            checks = []
        else:
            print(
                f"cognitude on {w.proxy.base}; SMTP STARTTLS :{w.starttls_port}, "
                f"SMTPS :{w.smtps_port}, untrusted SMTPS :{w.untrusted_port}, "
                f"webhook :{w.webhook.port}"
            )
        for name, check in checks:
            try:
                check()
            except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
                failed += 1
                where = traceback.extract_tb(e.__traceback__)[-1]
                print(f"FAIL {name}: {type(e).__name__}: {e} (line {where.lineno})")
            else:
                passed += 1
                print(f"ok {name}")
        if failed and hasattr(w, "proxy"):
            print("last lines of cognitude's output:")
            for line in w.proxy.output[-20:]:
                print(f"    {line}")
    finally:
        teardown()
    print(f"alerts: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
