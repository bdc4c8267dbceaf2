// Call a keygate-protected API with KG1-HMAC-SHA256 signatures.
//
// Java 17+, JDK only (java.net.http, javax.crypto). Copy sign() and send()
// into your backend; the rest of this file is a demo. Run it as a single
// source file:
//
//   KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... java Client.java

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class Client {
    static final String SCHEME = "KG1-HMAC-SHA256";
    static final SecureRandom RANDOM = new SecureRandom();
    static final HttpClient HTTP = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10))
            .build();

    record Signed(String authorization, String stringToSign) {}

    /**
     * Signs one request. target: path and query exactly as on the request line
     * ("/v1/orders?id=7&q=a%20b"). body: the exact bytes you send (empty for none).
     */
    static Signed sign(String keyId, String secret, String method, String target, byte[] body,
                       String timestamp, String nonce) throws Exception {
        String bodyHash = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(body));
        String stringToSign = String.join("\n",
                SCHEME, keyId, timestamp, nonce, method.toUpperCase(), target, bodyHash);
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        String signature = HexFormat.of().formatHex(mac.doFinal(stringToSign.getBytes(StandardCharsets.UTF_8)));
        return new Signed(SCHEME + " KeyId=" + keyId + ", Timestamp=" + timestamp + ", Nonce=" + nonce
                + ", Signature=" + signature, stringToSign);
    }

    /** Signs with the current time and a fresh nonce (use a new one for every request, retries too). */
    static Signed sign(String keyId, String secret, String method, String target, byte[] body) throws Exception {
        byte[] nonce = new byte[16];
        RANDOM.nextBytes(nonce);
        return sign(keyId, secret, method, target, body,
                Long.toString(System.currentTimeMillis() / 1000), HexFormat.of().formatHex(nonce));
    }

    record Answer(int status, String body, String stringToSign) {}

    /** Signs and sends one request. */
    static Answer send(String keyId, String secret, String method, String url, byte[] body, String contentType)
            throws Exception {
        URI uri = URI.create(url);
        // The raw (still percent-encoded) path and query are what goes on the request line.
        String target = uri.getRawPath() + (uri.getRawQuery() != null ? "?" + uri.getRawQuery() : "");
        Signed signed = sign(keyId, secret, method, target, body);
        HttpRequest.Builder request = HttpRequest.newBuilder(uri)
                .timeout(Duration.ofSeconds(30))
                .header("Authorization", signed.authorization())
                .method(method.toUpperCase(), body.length == 0
                        ? HttpRequest.BodyPublishers.noBody()
                        : HttpRequest.BodyPublishers.ofByteArray(body));
        if (contentType != null) {
            request.header("Content-Type", contentType);
        }
        HttpResponse<String> response = HTTP.send(request.build(), HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        return new Answer(response.statusCode(), response.body(), signed.stringToSign());
    }

    /** A string field of keygate's error JSON, unescaped (enough for its flat answers; no JSON library needed). */
    static String jsonString(String json, String field) {
        Matcher m = Pattern.compile("\"" + field + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(json);
        if (!m.find()) {
            return null;
        }
        StringBuilder out = new StringBuilder();
        String s = m.group(1);
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c != '\\' || i + 1 >= s.length()) {
                out.append(c);
                continue;
            }
            char e = s.charAt(++i);
            switch (e) {
                case 'n' -> out.append('\n');
                case 't' -> out.append('\t');
                case 'r' -> out.append('\r');
                case 'u' -> { out.append((char) Integer.parseInt(s.substring(i + 1, i + 5), 16)); i += 4; }
                default -> out.append(e);
            }
        }
        return out.toString();
    }

    /** Prints the error code and, for a signature mismatch, both strings to sign side by side. */
    static void explainRefusal(Answer answer) {
        String code = jsonString(answer.body(), "code");
        System.out.println("  refused: " + code + ": " + jsonString(answer.body(), "message"));
        if ("signature_mismatch".equals(code)) {
            String[] ours = answer.stringToSign().split("\n", -1);
            String[] theirs = String.valueOf(jsonString(answer.body(), "string_to_sign")).split("\n", -1);
            System.out.println("  string to sign, ours | server's ('!' marks a difference):");
            for (int i = 0; i < Math.max(ours.length, theirs.length); i++) {
                String a = i < ours.length ? ours[i] : "";
                String b = i < theirs.length ? theirs[i] : "";
                System.out.printf("  %s %-66s | %s%n", a.equals(b) ? " " : "!", a, b);
            }
            if (String.join("\n", ours).equals(String.join("\n", theirs))) {
                System.out.println("  the strings match, so the secret is wrong: use the whole secret of this key id, sk_ prefix included");
            }
        }
    }

    /** Test hook: tab-separated key_id, secret, method, target, timestamp, nonce, body_hex lines on stdin. */
    static void signVectors() throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line; (line = in.readLine()) != null; ) {
            if (line.isEmpty()) {
                continue;
            }
            String[] f = line.split("\t", -1);
            System.out.println(sign(f[0], f[1], f[2], f[3], HexFormat.of().parseHex(f[6]), f[4], f[5]).authorization());
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length == 1 && args[0].equals("--sign-vectors")) {
            signVectors();
            return;
        }
        System.setOut(new java.io.PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true, StandardCharsets.UTF_8));
        String base = System.getenv("KEYGATE_URL").replaceAll("/+$", "");
        String keyId = System.getenv("KEYGATE_KEY_ID");
        String secret = System.getenv("KEYGATE_SECRET");
        // Unicode escapes keep this file ASCII, so it compiles the same under any locale.
        byte[] json = "{\"order_id\":7,\"note\":\"caf\u00e9 \u2013 \u6771\u4eac \u2713\"}".getBytes(StandardCharsets.UTF_8);
        String[][] calls = {{"GET", "/v1/whoami?probe=1&x=a%20b"}, {"POST", "/v1/echo"}};
        boolean ok = true;
        for (String[] call : calls) {
            byte[] body = call[0].equals("POST") ? json : new byte[0];
            Answer answer = send(keyId, secret, call[0], base + call[1], body, body.length > 0 ? "application/json" : null);
            System.out.println(call[0] + " " + call[1] + " -> " + answer.status());
            if (answer.status() >= 200 && answer.status() < 300) {
                System.out.println("  " + answer.body());
            } else {
                ok = false;
                explainRefusal(answer);
            }
        }
        System.exit(ok ? 0 : 1);
    }
}
