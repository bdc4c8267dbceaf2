<?php
// Call a keygate-protected API with KG1-HMAC-SHA256 signatures.
//
// PHP 7.4+, no extensions beyond the defaults (hash, json, the http stream
// wrapper). Copy kg1_sign() (and kg1_send() if you have no HTTP client of
// your own) into your backend; the rest of this file is a demo.
//
//   KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... php client.php

const KG1_SCHEME = 'KG1-HMAC-SHA256';

/**
 * Returns [authorization header, string to sign] for one request.
 *
 * $target: path and query exactly as they go on the request line
 *          ("/v1/orders?id=7&q=a%20b"): not decoded, not re-ordered.
 * $body:   the exact bytes you send ('' for none). Encode JSON once, sign
 *          that string and send that string.
 */
function kg1_sign(string $keyId, string $secret, string $method, string $target, string $body,
                  ?string $timestamp = null, ?string $nonce = null): array
{
    $timestamp = $timestamp ?? (string) time();
    $nonce = $nonce ?? bin2hex(random_bytes(16)); // fresh for every request, retries too
    $stringToSign = implode("\n", [
        KG1_SCHEME,
        $keyId,
        $timestamp,
        $nonce,
        strtoupper($method),
        $target,
        hash('sha256', $body),
    ]);
    $signature = hash_hmac('sha256', $stringToSign, $secret);
    $authorization = sprintf('%s KeyId=%s, Timestamp=%s, Nonce=%s, Signature=%s',
        KG1_SCHEME, $keyId, $timestamp, $nonce, $signature);
    return [$authorization, $stringToSign];
}

/**
 * Signs and sends one request with PHP's http stream wrapper, which puts the
 * URL's path and query on the request line as written.
 * Returns [status, parsed JSON (or the raw text), string to sign].
 */
function kg1_send(string $keyId, string $secret, string $method, string $url, string $body = '',
                  array $headers = []): array
{
    $parts = parse_url($url);
    $target = ($parts['path'] ?? '/') . (isset($parts['query']) ? '?' . $parts['query'] : '');
    [$authorization, $stringToSign] = kg1_sign($keyId, $secret, $method, $target, $body);
    $headers[] = 'Authorization: ' . $authorization;
    $headers[] = 'Connection: close';
    $context = stream_context_create(['http' => [
        'method' => strtoupper($method),
        'header' => $headers,
        'content' => $body,
        'protocol_version' => 1.1,
        'ignore_errors' => true, // read the JSON of a 4xx instead of failing
        'timeout' => 30,
    ]]);
    $raw = @file_get_contents($url, false, $context);
    if ($raw === false) {
        throw new RuntimeException("cannot reach $url");
    }
    // $http_response_header is set by file_get_contents in this scope.
    preg_match('{^HTTP/\S+ (\d{3})}', $http_response_header[0] ?? '', $m);
    $answer = json_decode($raw, true);
    return [(int) ($m[1] ?? 0), $answer ?? $raw, $stringToSign];
}

/** Prints the error code and, for a signature mismatch, both strings to sign side by side. */
function kg1_explain_refusal($answer, string $ours): void
{
    $error = is_array($answer) ? ($answer['error'] ?? []) : [];
    $code = $error['code'] ?? '?';
    echo "  refused: $code: " . ($error['message'] ?? json_encode($answer)) . "\n";
    if ($code === 'signature_mismatch') {
        $theirs = $error['string_to_sign'] ?? '';
        echo "  string to sign, ours | server's ('!' marks a difference):\n";
        $a = explode("\n", $ours);
        $b = explode("\n", $theirs);
        for ($i = 0; $i < max(count($a), count($b)); $i++) {
            $x = $a[$i] ?? '';
            $y = $b[$i] ?? '';
            printf("  %s %-66s | %s\n", $x === $y ? ' ' : '!', $x, $y);
        }
        if ($ours === $theirs) {
            echo "  the strings match, so the secret is wrong: use the whole secret of this key id, sk_ prefix included\n";
        }
    }
    if ($code === 'timestamp_out_of_range') {
        printf("  server_time=%s our time=%d: fix the clock (NTP)\n", $error['server_time'] ?? '?', time());
    }
}

/** Test hook: tab-separated key_id, secret, method, target, timestamp, nonce,
 *  body_hex lines on stdin; one Authorization header per line on stdout. */
function kg1_sign_vectors(): void
{
    while (($line = fgets(STDIN)) !== false) {
        $line = rtrim($line, "\n");
        if ($line === '') {
            continue;
        }
        [$keyId, $secret, $method, $target, $timestamp, $nonce, $bodyHex] = explode("\t", $line);
        echo kg1_sign($keyId, $secret, $method, $target, (string) hex2bin($bodyHex), $timestamp, $nonce)[0], "\n";
    }
}

function main(): int
{
    $base = rtrim(getenv('KEYGATE_URL'), '/');
    $keyId = getenv('KEYGATE_KEY_ID');
    $secret = getenv('KEYGATE_SECRET');
    $body = json_encode(['order_id' => 7, 'note' => 'café – 東京 ✓'], JSON_UNESCAPED_UNICODE);
    $calls = [
        ['GET', '/v1/whoami?probe=1&x=a%20b', ''],
        ['POST', '/v1/echo', $body],
    ];
    $ok = true;
    foreach ($calls as [$method, $target, $payload]) {
        $headers = $payload !== '' ? ['Content-Type: application/json'] : [];
        [$status, $answer, $stringToSign] = kg1_send($keyId, $secret, $method, $base . $target, $payload, $headers);
        echo "$method $target -> $status\n";
        if ($status >= 200 && $status < 300) {
            echo '  ' . json_encode($answer, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES) . "\n";
        } else {
            $ok = false;
            kg1_explain_refusal($answer, $stringToSign);
        }
    }
    return $ok ? 0 : 1;
}

if (realpath($_SERVER['SCRIPT_FILENAME'] ?? '') === __FILE__) {
    if (($argv[1] ?? '') === '--sign-vectors') {
        kg1_sign_vectors();
        exit(0);
    }
    exit(main());
}
