#!/usr/bin/env bash
# Gets an access token with openssl and curl only, from a mounted ServiceKey Secret.
#
#   examples/shell/get-token.sh /var/run/servicekey [scope ...]
#
# The Secret's files are used as they are: private-key.pem, client-id, key-id,
# token-uri. TOKEN_URL overrides where the grant is POSTed (the grant's audience stays
# token-uri). Prints the token endpoint's JSON answer; exits non-zero on a refusal,
# printing the RFC 6749 error. Never echoes the assertion.
set -euo pipefail

dir=${1:?usage: get-token.sh <secret-mount-dir> [scope ...]}
shift
scope="$*"
for f in private-key.pem client-id key-id token-uri; do
  [[ -r "$dir/$f" ]] || { echo "get-token.sh: $dir/$f is missing or unreadable" >&2; exit 2; }
done

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

client_id=$(cat "$dir/client-id")
token_uri=$(cat "$dir/token-uri")
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"%s"}' "$(cat "$dir/key-id")" | b64url)
claims=$(printf '{"iss":"%s","aud":"%s","iat":%d,"exp":%d,"jti":"%s"}' \
  "$client_id" "$token_uri" "$now" "$((now + 300))" "$(openssl rand -hex 16)" | b64url)
signature=$(printf '%s.%s' "$header" "$claims" |
  openssl dgst -sha256 -sign "$dir/private-key.pem" -binary | b64url)

args=(--silent --show-error --fail-with-body -X POST "${TOKEN_URL:-$token_uri}"
  --data-urlencode "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer"
  --data-urlencode "assertion=$header.$claims.$signature")
[[ -n "$scope" ]] && args+=(--data-urlencode "scope=$scope")
curl "${args[@]}"
echo
