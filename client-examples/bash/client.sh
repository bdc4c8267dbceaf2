#!/usr/bin/env bash
# Call a keygate-protected API with KG1-HMAC-SHA256 signatures, using only
# bash, curl and openssl.
#
#   KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... bash client.sh
#
# Or `source client.sh` in your own script and call kg1_request.
#
# Note: `openssl dgst -hmac` takes the secret as a command-line argument, so
# it is visible in `ps` to other users of the machine while it runs. On a
# shared host, prefer one of the other examples.
set -euo pipefail

KG1_SCHEME="KG1-HMAC-SHA256"

# kg1_string_to_sign KEY_ID TIMESTAMP NONCE METHOD TARGET BODY_FILE
#   TARGET is the path and query exactly as sent ("/v1/orders?id=7&q=a%20b").
#   BODY_FILE holds the exact bytes sent (an empty file for no body).
kg1_string_to_sign() {
  local body_sha
  body_sha=$(openssl dgst -sha256 -r < "$6" | cut -d' ' -f1)
  printf '%s\n%s\n%s\n%s\n%s\n%s\n%s' "$KG1_SCHEME" "$1" "$2" "$3" "${4^^}" "$5" "$body_sha"
}

# kg1_authorization KEY_ID SECRET TIMESTAMP NONCE METHOD TARGET BODY_FILE
#   prints the Authorization header value.
kg1_authorization() {
  local string_to_sign signature
  string_to_sign=$(kg1_string_to_sign "$1" "$3" "$4" "$5" "$6" "$7")
  signature=$(printf '%s' "$string_to_sign" | openssl dgst -sha256 -hmac "$2" -r | cut -d' ' -f1)
  printf '%s KeyId=%s, Timestamp=%s, Nonce=%s, Signature=%s' "$KG1_SCHEME" "$1" "$3" "$4" "$signature"
}

# kg1_request METHOD URL [BODY [CONTENT_TYPE]]
#   Signs with KEYGATE_KEY_ID / KEYGATE_SECRET and sends with curl. Sets
#   KG1_STATUS, KG1_BODY (the answer) and KG1_STRING_TO_SIGN.
kg1_request() {
  local method=${1^^} url=$2 body=${3-} content_type=${4-application/json}
  local rest=${url#*://} target body_file timestamp nonce authorization out
  if [[ $rest == */* ]]; then target="/${rest#*/}"; else target="/"; fi
  target=${target%%#*}
  body_file=$(mktemp)
  printf '%s' "$body" > "$body_file"
  timestamp=$(date +%s)
  nonce=$(openssl rand -hex 16)  # fresh for every request, retries too
  KG1_STRING_TO_SIGN=$(kg1_string_to_sign "$KEYGATE_KEY_ID" "$timestamp" "$nonce" "$method" "$target" "$body_file")
  authorization=$(kg1_authorization "$KEYGATE_KEY_ID" "$KEYGATE_SECRET" "$timestamp" "$nonce" "$method" "$target" "$body_file")
  local args=(-sS --path-as-is -X "$method" -H "Authorization: $authorization" -w '\n%{http_code}')
  if [[ -n $body ]]; then
    args+=(-H "Content-Type: $content_type" --data-binary "@$body_file")
  fi
  # --path-as-is: curl must not rewrite the path we signed.
  out=$(curl "${args[@]}" "$url") || { rm -f "$body_file"; return 1; }
  rm -f "$body_file"
  KG1_STATUS=${out##*$'\n'}
  KG1_BODY=${out%$'\n'*}
}

# A field of keygate's flat error JSON (enough for its answers; no jq needed).
kg1_json_field() {
  printf '%s' "$1" | sed -n "s/.*\"$2\":\"\\(\\([^\"\\\\]\\|\\\\.\\)*\\)\".*/\\1/p"
}

# Prints the error code and, for a signature mismatch, both strings to sign side by side.
kg1_explain_refusal() {
  local code
  code=$(kg1_json_field "$KG1_BODY" code)
  echo "  refused: $code: $(kg1_json_field "$KG1_BODY" message)"
  if [[ $code == signature_mismatch ]]; then
    local theirs ours_lines their_lines i a b
    theirs=$(printf '%b' "$(kg1_json_field "$KG1_BODY" string_to_sign)")
    mapfile -t ours_lines <<< "$KG1_STRING_TO_SIGN"
    mapfile -t their_lines <<< "$theirs"
    echo "  string to sign, ours | server's ('!' marks a difference):"
    for ((i = 0; i < ${#ours_lines[@]} || i < ${#their_lines[@]}; i++)); do
      a=${ours_lines[i]-} b=${their_lines[i]-}
      printf '  %s %-66s | %s\n' "$([[ $a == "$b" ]] && echo ' ' || echo '!')" "$a" "$b"
    done
    if [[ $KG1_STRING_TO_SIGN == "$theirs" ]]; then
      echo "  the strings match, so the secret is wrong: use the whole secret of this key id, sk_ prefix included"
    fi
  fi
}

# Test hook: tab-separated key_id, secret, method, target, timestamp, nonce,
# body_hex lines on stdin; one Authorization header per line on stdout.
kg1_sign_vectors() {
  local key_id secret method target timestamp nonce body_hex body_file
  body_file=$(mktemp)
  while IFS=$'\t' read -r key_id secret method target timestamp nonce body_hex; do
    printf '%b' "$(sed 's/../\\x&/g' <<< "$body_hex")" > "$body_file"
    kg1_authorization "$key_id" "$secret" "$timestamp" "$nonce" "$method" "$target" "$body_file"
    echo
  done
  rm -f "$body_file"
}

kg1_demo() {
  : "${KEYGATE_URL:?set KEYGATE_URL}" "${KEYGATE_KEY_ID:?set KEYGATE_KEY_ID}" "${KEYGATE_SECRET:?set KEYGATE_SECRET}"
  local base=${KEYGATE_URL%/} failed=0 call method target body
  local calls=("GET|/v1/whoami?probe=1&x=a%20b|" 'POST|/v1/echo|{"order_id":7,"note":"café – 東京 ✓"}')
  for call in "${calls[@]}"; do
    IFS='|' read -r method target body <<< "$call"
    kg1_request "$method" "$base$target" "$body"
    echo "$method $target -> $KG1_STATUS"
    if ((KG1_STATUS >= 200 && KG1_STATUS < 300)); then
      echo "  $KG1_BODY"
    else
      failed=1
      kg1_explain_refusal
    fi
  done
  return "$failed"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  if [[ ${1-} == --sign-vectors ]]; then
    kg1_sign_vectors
  else
    kg1_demo
  fi
fi
