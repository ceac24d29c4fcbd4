#!/usr/bin/env python3
# Copyright 2026 The servicekey-operator Authors.
# SPDX-License-Identifier: Apache-2.0
"""Call an API protected by servicekey-operator's access tokens, from Python.

Needs only Debian's packages: apt-get install python3-jwt python3-requests
python3-cryptography. It

* signs a JWT grant (RFC 7523) with the private key from the ServiceKey's key.json
  and exchanges it at the key's token_uri for an access token;
* caches the token (in memory, and in --cache FILE between runs, mode 0600) and uses
  it until the API says it expired;
* on 401 "Access token expired" from the API, gets a new token and sends the request
  once more, never more than once (a token the API refuses for another reason is not
  retried: a new one would be refused alike);
* sends the token only to the origins of the token's URL audiences (the ServiceKey's
  spec.audiences) or to allowed_origins, follows no redirect, and sends grants and
  tokens over plain http to loopback only;
* on a refusal, raises TokenError with the token endpoint's RFC 6749 error and
  error_description, never printing the assertion or a token.

    python3 servicekey_client.py --key-file key.json --scope read URL
"""
import argparse
import json
import os
import sys
import time
import urllib.parse
import uuid

import jwt
import requests

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
EXPIRED = "Access token expired"  # the verifier's exact text; clients match on it


class TokenError(Exception):
    """The token endpoint refused the grant: error and description from its JSON."""

    def __init__(self, status, error, description):
        super().__init__(f"token endpoint refused the grant ({status}): {error}: {description}")
        self.status, self.error, self.description = status, error, description


def _origin(url):
    u = urllib.parse.urlsplit(url)
    port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    return f"{u.scheme}://{u.hostname}:{port}"


def _check_transport(url, allow_insecure_http):
    # A token or grant sent over plain http can be read on the way; allow it to loopback
    # only, unless the caller says the network encrypts the hop.
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https" or allow_insecure_http:
        return
    if u.scheme == "http" and u.hostname in ("localhost", "127.0.0.1", "::1"):
        return
    raise ValueError(f"refusing to send a grant or token to {u.scheme}://{u.netloc} over plain http")


class ServiceKeyClient:
    """Gets, caches and renews access tokens for one key file and set of scopes."""

    def __init__(self, key_file, scopes, cache_file=None, allow_insecure_http=False,
                 allowed_origins=(), token_url=None, session=None, clock=time.time):
        self.key_file, self.scope = key_file, " ".join(scopes)
        self.cache_file, self.allow_insecure_http = cache_file, allow_insecure_http
        self.allowed_origins = {_origin(o) for o in allowed_origins}
        self.token_url = token_url  # where to POST; the grant's audience stays token_uri
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no ~/.netrc credentials or proxies from the environment
        self.session, self.clock = session, clock  # injected in tests
        self._token = self._load_cache()

    def _identity(self):
        with open(self.key_file) as f:
            key = json.load(f)
        return {"client_id": key["client_id"], "token_uri": key["token_uri"], "scope_requested": self.scope}

    def _load_cache(self):
        if not self.cache_file or not os.path.exists(self.cache_file):
            return None
        st = os.stat(self.cache_file, follow_symlinks=False)
        if not os.path.isfile(self.cache_file) or os.path.islink(self.cache_file) or \
                st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise ValueError(f"refusing the token cache {self.cache_file}: not a regular file of "
                             "yours with mode 0600")
        try:
            with open(self.cache_file) as f:
                cached = json.load(f)
        except ValueError:
            return None  # a cache another run is writing, or a damaged one: get a new token
        identity = self._identity()
        return cached if all(cached.get(k) == v for k, v in identity.items()) else None

    def _save_cache(self):
        if not self.cache_file:
            return
        # A new file, never a symlink, mode 0600 from the start, then renamed into place:
        # a concurrent run reads the old token or the new one, never half of one.
        tmp = f"{self.cache_file}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._token, f)
        os.replace(tmp, self.cache_file)

    def _assertion(self, key, now):
        claims = {"iss": key["client_id"], "aud": key["token_uri"], "iat": now,
                  "exp": now + 120, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, key["private_key"], algorithm="RS256",
                          headers={"kid": key["key_id"]})

    def new_token(self):
        """Signs a grant with the key file as it is now (a rotated key is picked up)."""
        with open(self.key_file) as f:
            key = json.load(f)
        url = self.token_url or key["token_uri"]
        _check_transport(url, self.allow_insecure_http)
        now = int(self.clock())
        data = {"grant_type": JWT_BEARER, "assertion": self._assertion(key, now)}
        if self.scope:
            data["scope"] = self.scope
        # No redirects: a 307 would carry the signed assertion to wherever it points.
        resp = self.session.post(url, data=data, timeout=10, allow_redirects=False)
        if resp.status_code != 200:
            try:
                body = resp.json()
            except ValueError:
                body = {}
            raise TokenError(resp.status_code, body.get("error", "unknown"),
                             body.get("error_description", resp.reason))
        body = resp.json()
        self._token = dict(self._identity(), access_token=body["access_token"])
        self._save_cache()
        return self._token["access_token"]

    def token(self):
        """The cached token, or a new one when none is cached."""
        if self._token:
            return self._token["access_token"]
        return self.new_token()

    def request(self, method, url, **kw):
        """Sends the request with the token; once more with a new one if it expired."""
        _check_transport(url, self.allow_insecure_http)
        resp = self._send(method, url, self.token(), **kw)
        if resp.status_code == 401 and _expired(resp):
            print("access token expired; getting a new one and retrying once", file=sys.stderr)
            resp = self._send(method, url, self.new_token(), **kw)
        return resp

    def _check_origin(self, url, token):
        """The token goes only to its URL audiences' origins, or to allowed_origins."""
        aud = jwt.decode(token, options={"verify_signature": False}).get("aud", [])
        aud = [aud] if isinstance(aud, str) else aud
        allowed = self.allowed_origins | {_origin(a) for a in aud if a.startswith(("https://", "http://"))}
        if _origin(url) not in allowed:
            raise ValueError(f"refusing to send the access token to {_origin(url)}: not among the "
                             "token's URL audiences or the allowed origins")

    def _send(self, method, url, token, **kw):
        self._check_origin(url, token)
        headers = dict(kw.pop("headers", {}) or {}, Authorization=f"Bearer {token}")
        # No redirects: a redirect could carry the token to another origin.
        return self.session.request(method, url, headers=headers, allow_redirects=False,
                                    timeout=kw.pop("timeout", 10), **kw)


def _expired(resp):
    """RFC 6750 §3: the reason is in WWW-Authenticate; the verifier also sends JSON."""
    if EXPIRED in resp.headers.get("WWW-Authenticate", ""):
        return True
    try:
        return resp.json().get("error_description") == EXPIRED
    except ValueError:
        return False


def main(argv=None):
    p = argparse.ArgumentParser(description="GET a URL protected by servicekey-operator tokens")
    p.add_argument("--key-file", default="/var/run/servicekey/key.json")
    p.add_argument("--scope", action="append", default=[], help="a scope to ask for (repeatable)")
    p.add_argument("--cache", help="keep the token in this file (mode 0600) between runs")
    p.add_argument("--allow-insecure-http", action="store_true",
                   help="send grants and tokens over plain http to hosts other than loopback")
    p.add_argument("--allowed-origin", action="append", default=[],
                   help="an origin the token may be sent to besides its URL audiences (repeatable)")
    p.add_argument("--token-url", help="POST grants here (a port-forward, say); the grant's "
                   "audience stays the key file's token_uri")
    p.add_argument("url")
    args = p.parse_args(argv)
    c = ServiceKeyClient(args.key_file, args.scope, args.cache, args.allow_insecure_http,
                         args.allowed_origin, args.token_url)
    try:
        resp = c.request("GET", args.url)
    except (TokenError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    print(resp.status_code, resp.text.strip())
    return 0 if resp.ok else 1


if __name__ == "__main__":
    sys.exit(main())
