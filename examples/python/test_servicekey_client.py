# Copyright 2026 The servicekey-operator Authors.
# SPDX-License-Identifier: Apache-2.0
"""Unit tests of servicekey_client with a fake HTTP session (no network).

The real flow, against the token server and the example resource server, is run by
hack/e2e (python_test.go). Run: python3 -m unittest discover examples/python
"""
import json
import os
import stat
import tempfile
import unittest

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import servicekey_client as skc


class Resp:
    def __init__(self, status, body=None, headers=None, reason=""):
        self.status_code, self._body, self.headers = status, body, headers or {}
        self.reason, self.ok = reason, status < 400
        self.text = json.dumps(body) if body is not None else ""

    def json(self):
        if self._body is None:
            raise ValueError("no JSON")
        return self._body


class Session:
    """Answers token POSTs from `grants` and API calls from `calls`, recording both."""

    def __init__(self, grants, calls=()):
        self.grants, self.calls = list(grants), list(calls)
        self.posted, self.sent = [], []

    def post(self, url, data, timeout, allow_redirects):
        assert allow_redirects is False, "a redirect would carry the assertion away"
        self.posted.append((url, data))
        return self.grants.pop(0)

    def request(self, method, url, headers, allow_redirects, timeout):
        assert allow_redirects is False, "a redirect would carry the token away"
        self.sent.append(headers["Authorization"])
        return self.calls.pop(0)


# Access tokens as the token server issues them, addressed to the APIs (their origins
# are where the client may send them); the signature does not matter to the client.
T = {name: jwt.encode({"aud": ["https://api.example.com", "http://127.0.0.1:8000", "http://plain.example.com"],
                       "jti": name},
                      "not-a-real-key-but-long-enough-for-hs256", algorithm="HS256")
     for name in ("t1", "t2")}


def token(name, expires_in=3600):
    return Resp(200, {"access_token": T[name], "token_type": "Bearer", "expires_in": expires_in})


def bearer(*names):
    return [f"Bearer {T[n]}" for n in names]


EXPIRED = Resp(401, {"error": "invalid_token", "error_description": "Access token expired"},
               {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="Access token expired"'})


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()
        self.key_file = os.path.join(self.dir.name, "key.json")
        with open(self.key_file, "w") as f:
            json.dump({"client_id": "payments/billing", "key_id": "kid-1", "private_key": pem,
                       "token_uri": "https://token.example.com/oauth2/token"}, f)
        self.now = 1_000_000

    def client(self, session, **kw):
        return skc.ServiceKeyClient(self.key_file, ["read"], session=session, clock=lambda: self.now, **kw)

    def test_the_grant_is_signed_with_the_key(self):
        s = Session([token("t1")])
        self.client(s).token()
        url, data = s.posted[0]
        self.assertEqual(url, "https://token.example.com/oauth2/token")
        self.assertEqual(data["grant_type"], skc.JWT_BEARER)
        self.assertEqual(data["scope"], "read")
        claims = jwt.decode(data["assertion"], self.private.public_key(), algorithms=["RS256"],
                            audience=url, options={"verify_exp": False, "verify_iat": False})
        self.assertEqual(claims["iss"], "payments/billing")
        self.assertEqual(jwt.get_unverified_header(data["assertion"])["kid"], "kid-1")
        self.assertTrue(claims["jti"])

    def test_the_token_is_cached_until_the_api_says_it_expired(self):
        s = Session([token("t1"), token("t2")], [Resp(200, {}), Resp(200, {}), EXPIRED, Resp(200, {})])
        c = self.client(s)
        for _ in range(3):
            c.request("GET", "https://api.example.com/hello")
        self.assertEqual(s.sent, bearer("t1", "t1", "t1", "t2"))
        self.assertEqual(len(s.posted), 2)

    def test_the_cache_file_is_private_and_reused(self):
        cache = os.path.join(self.dir.name, "token.json")
        self.client(Session([token("t1")]), cache_file=cache).token()
        self.assertEqual(stat.S_IMODE(os.stat(cache).st_mode), 0o600)
        again = Session([])
        self.assertEqual(self.client(again, cache_file=cache).token(), T["t1"])
        self.assertEqual(again.posted, [])

    def test_a_cache_others_can_read_is_refused(self):
        cache = os.path.join(self.dir.name, "token.json")
        with open(cache, "w") as f:
            json.dump({"access_token": T["t1"]}, f)
        os.chmod(cache, 0o644)
        with self.assertRaises(ValueError):
            self.client(Session([]), cache_file=cache)

    def test_the_cache_of_another_key_is_not_used(self):
        cache = os.path.join(self.dir.name, "token.json")
        self.client(Session([token("t1")]), cache_file=cache).token()
        with open(self.key_file) as f:
            key = json.load(f)
        key["client_id"] = "payments/other"
        with open(self.key_file, "w") as f:
            json.dump(key, f)
        other = Session([token("t2")])
        self.assertEqual(self.client(other, cache_file=cache).token(), T["t2"])

    def test_the_token_goes_only_to_its_audiences(self):
        s = Session([token("t1")], [Resp(200, {})])
        c = self.client(s)
        with self.assertRaises(ValueError):
            c.request("GET", "https://elsewhere.example.com/hello")
        self.assertEqual(s.sent, [])
        c.request("GET", "https://api.example.com:443/hello")
        self.assertEqual(s.sent, bearer("t1"))

    def test_retries_once_on_access_token_expired(self):
        s = Session([token("t1"), token("t2")], [EXPIRED, Resp(200, {"ok": True})])
        resp = self.client(s).request("GET", "https://api.example.com/hello")
        self.assertEqual(resp.status_code, 200)
        self.assertEqual(s.sent, bearer("t1", "t2"))

    def test_a_second_expired_answer_is_returned_not_looped_on(self):
        s = Session([token("t1"), token("t2")], [EXPIRED, EXPIRED])
        resp = self.client(s).request("GET", "https://api.example.com/hello")
        self.assertEqual(resp.status_code, 401)
        self.assertEqual(len(s.sent), 2)

    def test_other_401s_are_not_retried(self):
        bad = Resp(401, {"error": "invalid_token", "error_description": "token has invalid audience"})
        s = Session([token("t1")], [bad])
        self.assertEqual(self.client(s).request("GET", "https://api.example.com/").status_code, 401)
        self.assertEqual(len(s.posted), 1)

    def test_a_refusal_says_why(self):
        s = Session([Resp(400, {"error": "invalid_scope", "error_description": "scope write is not granted"})])
        with self.assertRaises(skc.TokenError) as e:
            self.client(s).token()
        self.assertEqual((e.exception.status, e.exception.error), (400, "invalid_scope"))
        self.assertIn("scope write is not granted", str(e.exception))

    def test_plain_http_only_to_loopback(self):
        s = Session([token("t1")], [Resp(200, {})])
        c = self.client(s)
        with self.assertRaises(ValueError):  # an audience of the token, but plain http
            c.request("GET", "http://plain.example.com/hello")
        c.request("GET", "http://127.0.0.1:8000/hello")
        self.assertEqual(s.sent, bearer("t1"))

    def test_no_grant_over_plain_http_to_another_host(self):
        s = Session([token("t1")])
        with self.assertRaises(ValueError):
            self.client(s, token_url="http://token.example.com/oauth2/token").token()
        self.assertEqual(s.posted, [])


if __name__ == "__main__":
    unittest.main()
