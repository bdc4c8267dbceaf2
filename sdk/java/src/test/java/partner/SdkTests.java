package partner;

import dev.keygate.client.Json;
import dev.keygate.client.KeygateClient;
import dev.keygate.client.KeygateClient.KeygateResponse;
import dev.keygate.client.KeygateException;
import dev.keygate.client.KeygateSigner;
import dev.keygate.client.RetryPolicy;
import dev.keygate.client.Scheme;
import dev.keygate.client.Signed;
import dev.keygate.client.Signing;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpRequest.BodyPublishers;
import java.net.http.HttpResponse.BodyHandlers;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.UUID;

/**
 * The SDK's tests, using only its public API from outside its package: the
 * published vectors, then the behaviour suite against a real keygate (run
 * under sdk/testbed.py, which sets the KEYGATE_* environment). A plain
 * runner: every method whose name starts with "test" runs; any failure
 * makes the exit status 1.
 */
public final class SdkTests {
    static final HttpClient HTTP = HttpClient.newHttpClient();
    static final String WRONG_SECRET = "sk_" + "A".repeat(43);

    public static void main(String[] args) throws Exception {
        int failed = 0, passed = 0;
        for (Method test : SdkTests.class.getDeclaredMethods()) {
            if (!test.getName().startsWith("test")) continue;
            try {
                test.invoke(null);
                passed++;
                System.out.println("ok   " + test.getName());
            } catch (InvocationTargetException e) {
                failed++;
                System.out.println("FAIL " + test.getName() + ": " + e.getCause());
                e.getCause().printStackTrace(System.out);
            }
        }
        System.out.println(passed + " passed, " + failed + " failed");
        System.exit(failed == 0 && passed > 0 ? 0 : 1);
    }

    static String env(String name) {
        String value = System.getenv(name);
        if (value == null || value.isEmpty()) throw new IllegalStateException(name + " is not set: run under sdk/testbed.py");
        return value;
    }

    static void check(boolean condition, Object what) {
        if (!condition) throw new AssertionError(String.valueOf(what));
    }

    static KeygateClient client(String prefix) {
        return client(KeygateSigner.builder(env("KEYGATE_" + prefix + "KEY_ID"), env("KEYGATE_" + prefix + "SECRET")));
    }

    static KeygateClient client(KeygateSigner.Builder builder) {
        return new KeygateClient(HTTP, builder.build());
    }

    static KeygateSigner.Builder mainKey() {
        return KeygateSigner.builder(env("KEYGATE_KEY_ID"), env("KEYGATE_SECRET"));
    }

    static HttpRequest get(String url) {
        return HttpRequest.newBuilder(URI.create(url)).GET().build();
    }

    static HttpRequest post(String url, String body) {
        return HttpRequest.newBuilder(URI.create(url)).POST(BodyPublishers.ofString(body)).build();
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> ok(KeygateClient client, HttpRequest request) throws Exception {
        KeygateResponse<String> response = client.send(request, BodyHandlers.ofString());
        KeygateClient.refusal(response).ifPresent(e -> { throw new AssertionError("refused: " + e.getMessage()); });
        check(response.statusCode() / 100 == 2, response.statusCode());
        return (Map<String, Object>) Json.parse(response.body());
    }

    static KeygateException refused(KeygateClient client, HttpRequest request) throws Exception {
        return KeygateClient.refusal(client.send(request, BodyHandlers.ofString()))
                .orElseThrow(() -> new AssertionError("not a refusal"));
    }

    static byte[] body(Map<String, Object> c) {
        if (c.get("body_base64") != null) return Base64.getDecoder().decode((String) c.get("body_base64"));
        return ((String) c.getOrDefault("body", "")).getBytes(StandardCharsets.UTF_8);
    }

    @SuppressWarnings("unchecked")
    static Map<String, List<Map<String, Object>>> vectors() throws Exception {
        return (Map<String, List<Map<String, Object>>>) Json.parse(Files.readString(Path.of(env("KEYGATE_VECTORS"))));
    }

    static Signed sign(Map<String, Object> c) {
        return Signing.sign((String) c.get("key_id"), (String) c.get("secret"), (String) c.get("method"),
                (String) c.get("request_target"), body(c), Long.parseLong((String) c.get("timestamp")),
                (String) c.get("nonce"), Scheme.KG1);
    }

    // The published vectors.

    @SuppressWarnings("unchecked")
    static void testEveryValidVectorSignsExactly() throws Exception {
        List<Map<String, Object>> valid = vectors().get("valid");
        check(!valid.isEmpty(), "no vectors");
        for (Map<String, Object> c : valid) {
            Signed signed = sign(c);
            Map<String, Object> expected = (Map<String, Object>) c.get("expected");
            check(signed.stringToSign().equals(expected.get("string_to_sign")), c.get("name"));
            check(signed.headers().get("Authorization").equals(expected.get("authorization")), c.get("name"));
        }
    }

    @SuppressWarnings("unchecked")
    static void testEveryMismatchVectorSignsDifferently() throws Exception {
        List<Map<String, Object>> mismatch = vectors().get("signature_mismatch");
        check(!mismatch.isEmpty(), "no vectors");
        for (Map<String, Object> c : mismatch) {
            Signed signed = sign((Map<String, Object>) c.get("request"));
            check(!signed.headers().get("Authorization").equals(c.get("authorization")), c.get("name"));
        }
    }

    static void testTheDiffMarksTheFirstDifferingLine() {
        String diff = Signing.diffLines("a\nb\nc", "a\nB\nC");
        List<String> marked = diff.lines().filter(l -> l.startsWith(">")).toList();
        check(marked.size() == 1 && marked.get(0).contains("b") && marked.get(0).contains("| B"), diff);
    }

    static void testTheTargetIsWhatJavaNetHttpSends() {
        check(KeygateSigner.requestTarget(URI.create("http://h")).equals("/"), "empty path");
        check(KeygateSigner.requestTarget(URI.create("http://h/a?q=a%20b+c&k=1&k=2")).equals("/a?q=a%20b+c&k=1&k=2"), "raw");
        check(KeygateSigner.requestTarget(URI.create("http://h/caf\u00e9?x=\u6771")).equals("/caf%C3%A9?x=%E6%9D%B1"), "utf-8");
    }

    // Against keygate.

    static void testSignsGetsPostsAndStreamedBodies() throws Exception {
        String url = env("KEYGATE_URL");
        check(ok(client(""), get(url + "/v1/whoami")).get("key_id").equals(env("KEYGATE_KEY_ID")), "whoami");
        check(ok(client(""), post(url + "/v1/echo", "{\"note\":\"caf\u00e9 \u2713\"}")).get("body").equals("{\"note\":\"caf\u00e9 \u2713\"}"), "echo");
        HttpRequest streamed = HttpRequest.newBuilder(URI.create(url + "/v1/echo"))
                .POST(BodyPublishers.ofInputStream(() -> new java.io.ByteArrayInputStream("streamed b\u00f6dy".getBytes(StandardCharsets.UTF_8))))
                .build();
        check(ok(client(""), streamed).get("body").equals("streamed b\u00f6dy"), "streamed");
    }

    static void testSignsTheQueryExactlyAsSent() throws Exception {
        String url = env("KEYGATE_URL");
        ok(client(""), get(url + "/v1/whoami?q=a%20b+c&path=a%2Fb&city=Zo%C3%AB&k=1&k=2"));
        // Non-ASCII in the URI: java.net.http encodes it on the request line.
        ok(client(""), HttpRequest.newBuilder(new URI("http", null, "127.0.0.1", URI.create(url).getPort(), "/v1/whoami", "city=Zo\u00eb \u6771\u4eac&k=1&k=2", null)).build());
        Map<String, Object> seen = ok(client(""), get(url + "/orders/7?q=a%20b+c&path=a%2Fb&k=1&k=2"));
        check(seen.get("target").equals("/orders/7?q=a%20b+c&path=a%2Fb&k=1&k=2"), seen);
        Map<String, Object> put = ok(client(""), HttpRequest.newBuilder(URI.create(url + "/notes/1")).PUT(BodyPublishers.ofString("put bytes")).build());
        String sum = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest("put bytes".getBytes(StandardCharsets.UTF_8)));
        check(put.get("body_sha256").equals(sum), put);
    }

    static void testABodyOverTheLimitIsRefusedBeforeSending() throws Exception {
        try {
            client(mainKey().maxBodyBytes(10)).send(post(env("KEYGATE_URL") + "/v1/echo", "x".repeat(11)), BodyHandlers.ofString());
            throw new AssertionError("sent");
        } catch (KeygateSigner.BodyTooLargeException expected) {
        }
    }

    static void testAWrongSecretShowsBothStringsToSign() throws Exception {
        KeygateClient wrong = client(KeygateSigner.builder(env("KEYGATE_KEY_ID"), WRONG_SECRET));
        KeygateException e = refused(wrong, get(env("KEYGATE_URL") + "/v1/whoami?x=1"));
        check(e.code().equals("signature_mismatch") && e.status() == 401 && e.requestId().isPresent(), e);
        check(e.serverStringToSign().orElseThrow().contains("/v1/whoami?x=1"), e);
        check(e.serverStringToSign().equals(e.stringToSign()), e);
        check(e.getMessage().contains("the secret differs"), e.getMessage());
        try {
            wrong.sendOrThrow(get(env("KEYGATE_URL") + "/v1/whoami"), BodyHandlers.ofString());
            throw new AssertionError("not thrown");
        } catch (KeygateException thrown) {
            check(thrown.code().equals("signature_mismatch"), thrown);
        }
    }

    static void testEachRefusalHasItsCode() throws Exception {
        String url = env("KEYGATE_URL");
        record Case(KeygateClient client, HttpRequest request, String code, int status) {}
        List<Case> cases = List.of(
                new Case(client(KeygateSigner.builder("pk_" + "Z".repeat(24), env("KEYGATE_SECRET"))), get(url + "/v1/whoami"), "unknown_key", 401),
                new Case(client("REVOKED_"), get(url + "/v1/whoami"), "key_revoked", 401),
                new Case(client("NARROW_"), post(url + "/v1/echo", "{}"), "forbidden", 403),
                new Case(client(mainKey().maxBodyBytes(4 << 20)), post(url + "/v1/echo", "x".repeat((64 << 10) + 1)), "body_too_large", 413));
        for (Case c : cases) {
            KeygateException e = refused(c.client(), c.request());
            check(e.code().equals(c.code()) && e.status() == c.status() && !e.detail().isEmpty(), e);
        }
    }

    static void testEveryMalformedVectorIsRefusedWithItsCode() throws Exception {
        for (Map<String, Object> c : vectors().get("malformed")) {
            HttpRequest request = HttpRequest.newBuilder(URI.create(env("KEYGATE_URL") + "/v1/whoami"))
                    .header("Authorization", (String) c.get("authorization")).build();
            var response = HTTP.send(request, BodyHandlers.ofString());
            KeygateException e = KeygateException.parse(response.statusCode(), response.headers(), response.body(), null).orElseThrow();
            check(e.code().equals(c.get("expected_error")), c.get("name") + ": " + e);
        }
    }

    static void testAReusedNonceIsRefused() throws Exception {
        Signed signed = Signing.sign(env("KEYGATE_KEY_ID"), env("KEYGATE_SECRET"), "GET", "/v1/whoami", new byte[0],
                System.currentTimeMillis() / 1000, null, Scheme.KG1);
        HttpRequest request = HttpRequest.newBuilder(URI.create(env("KEYGATE_URL") + "/v1/whoami"))
                .header("Authorization", signed.headers().get("Authorization")).build();
        check(HTTP.send(request, BodyHandlers.ofString()).statusCode() == 200, "first");
        var again = HTTP.send(request, BodyHandlers.ofString());
        check(KeygateException.parse(again.statusCode(), again.headers(), again.body(), null).orElseThrow().code().equals("nonce_reused"), again.body());
    }

    static void testSkewIsCorrectedFromServerTimeAndKept() throws Exception {
        String shifted = env("KEYGATE_SHIFTED_URL");
        KeygateClient client = client("");
        ok(client, get(shifted + "/v1/whoami"));
        check(Math.abs(client.signer().clockOffsetMillis() - 600_000) < 5000, client.signer().clockOffsetMillis());
        ok(client, post(shifted + "/v1/echo", "again"));
        KeygateException e = refused(client(mainKey().correctClockSkew(false)), get(shifted + "/v1/whoami"));
        check(e.code().equals("timestamp_out_of_range"), e);
        check(Math.abs(e.serverTime().orElseThrow() - (System.currentTimeMillis() / 1000 + 600)) < 5, e.serverTime());
    }

    static void testKeygatesOwn503IsRetried() throws Exception {
        KeygateResponse<String> response = client("").send(get(env("KEYGATE_LOCKED_URL") + "/v1/whoami"), BodyHandlers.ofString());
        check(response.statusCode() == 200, response.body());
        check(response.previousResponse().orElseThrow().statusCode() == 503, "no 503 first");
    }

    static void testAnUpstream503IsRetriedWithAFreshNonceAndAPostOnlyWhenAsked() throws Exception {
        String url = env("KEYGATE_URL");
        ok(client(""), get(url + "/flaky/" + UUID.randomUUID()));
        check(refused(client(""), post(url + "/flaky/" + UUID.randomUUID(), "1")).code().equals("unavailable"), "post");
        ok(client(mainKey().retry(RetryPolicy.DEFAULT.withRetryNonIdempotent(true))), post(url + "/flaky/" + UUID.randomUUID(), "1"));
    }

    static void testARateLimitIsWaitedOut() throws Exception {
        String url = env("KEYGATE_URL");
        KeygateClient limited = client("LIMITED_");
        ok(limited, get(url + "/v1/whoami"));
        ok(limited, get(url + "/v1/whoami"));
        Thread.sleep(1200);
        KeygateClient once = client(KeygateSigner.builder(env("KEYGATE_LIMITED_KEY_ID"), env("KEYGATE_LIMITED_SECRET")).retry(RetryPolicy.NONE));
        ok(once, get(url + "/v1/whoami"));
        KeygateException e = refused(once, get(url + "/v1/whoami"));
        check(e.code().equals("rate_limited") && e.retryAfter().orElseThrow().toMillis() >= 1000, e);
    }

    static void testARotatedKeysOldSecretWorksDuringGrace() throws Exception {
        for (String prefix : List.of("OLD_", "NEW_")) {
            check(ok(client(prefix), get(env("KEYGATE_URL") + "/v1/whoami")).get("key_id").equals(env("KEYGATE_" + prefix + "KEY_ID")), prefix);
        }
    }

    static void testAConnectionDroppedBeforeTheAnswerIsResentAndStaysExactlyOnce() throws Exception {
        URI keygate = URI.create(env("KEYGATE_URL"));
        try (DroppingProxy proxy = new DroppingProxy(keygate, DroppingProxy.Drop.BEFORE_FORWARDING)) {
            ok(client(""), post(proxy.url() + "/v1/echo", "dropped once, done once"));
        }
        try (DroppingProxy proxy = new DroppingProxy(keygate, DroppingProxy.Drop.AFTER_KEYGATE_ANSWERED)) {
            try {
                client("").send(post(proxy.url() + "/v1/echo", "done, answer lost"), BodyHandlers.ofString());
                throw new AssertionError("a lost answer was not reported");
            } catch (java.io.IOException e) {
                check(e.getMessage().contains("nonce_reused") && e.getCause() != null, e);
            }
        }
    }

    static void testRfc9421() throws Exception {
        String url = env("KEYGATE_URL");
        KeygateClient client = client(mainKey().scheme(Scheme.RFC9421));
        ok(client, get(url + "/v1/whoami?q=a%20b+c&k=1&k=2"));
        check(ok(client, post(url + "/v1/echo", "nine four two one")).get("body").equals("nine four two one"), "echo");
        KeygateException e = refused(client(KeygateSigner.builder(env("KEYGATE_KEY_ID"), WRONG_SECRET).scheme(Scheme.RFC9421)), get(url + "/v1/whoami"));
        check(e.code().equals("signature_mismatch") && e.stringToSign().orElseThrow().contains("\"@method\": GET"), e);
    }
}
