package dev.keygate.client;

import java.nio.charset.StandardCharsets;
import java.security.InvalidKeyException;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.ArrayList;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/** The signature schemes: pure functions, no I/O. */
public final class Signing {
    public static final String KG1 = "KG1-HMAC-SHA256";
    private static final SecureRandom RANDOM = new SecureRandom();

    private Signing() {}

    /** KG1's seven lines (CONTRACT section 2). */
    public static String stringToSign(String keyId, long timestamp, String nonce, String method, String target, byte[] body) {
        return String.join("\n", KG1, keyId, Long.toString(timestamp), nonce,
                method.toUpperCase(Locale.ROOT), target, HexFormat.of().formatHex(sha256(body)));
    }

    /** 16 random bytes, hex: fresh for every request, retries included. */
    public static String newNonce() {
        byte[] bytes = new byte[16];
        RANDOM.nextBytes(bytes);
        return HexFormat.of().formatHex(bytes);
    }

    /**
     * Signs one request. target: the path and query exactly as on the request
     * line; body: the exact bytes sent; nonce: null for a fresh one.
     */
    public static Signed sign(String keyId, String secret, String method, String target, byte[] body,
                              long timestamp, String nonce, Scheme scheme) {
        if (nonce == null) nonce = newNonce();
        if (scheme == Scheme.RFC9421) return signRfc9421(keyId, secret, method, target, body, timestamp, nonce);
        String text = stringToSign(keyId, timestamp, nonce, method, target, body);
        String header = KG1 + " KeyId=" + keyId + ", Timestamp=" + timestamp + ", Nonce=" + nonce
                + ", Signature=" + HexFormat.of().formatHex(hmac(secret, text));
        return new Signed(Map.of("Authorization", header), text);
    }

    // RFC 9421 with alg hmac-sha256, covering the method, the request target
    // as sent and, when there is a body, its RFC 9530 Content-Digest.
    private static Signed signRfc9421(String keyId, String secret, String method, String target, byte[] body,
                                      long timestamp, String nonce) {
        Map<String, String> headers = new LinkedHashMap<>();
        List<String> components = new ArrayList<>(List.of("\"@method\"", "\"@request-target\""));
        List<String> lines = new ArrayList<>(List.of(
                "\"@method\": " + method.toUpperCase(Locale.ROOT), "\"@request-target\": " + target));
        if (body.length > 0) {
            String digest = "sha-256=:" + Base64.getEncoder().encodeToString(sha256(body)) + ":";
            headers.put("Content-Digest", digest);
            components.add("\"content-digest\"");
            lines.add("\"content-digest\": " + digest);
        }
        String params = "(" + String.join(" ", components) + ");created=" + timestamp + ";keyid=\"" + keyId
                + "\";nonce=\"" + nonce + "\";alg=\"hmac-sha256\"";
        lines.add("\"@signature-params\": " + params);
        String base = String.join("\n", lines);
        headers.put("Signature-Input", "sig1=" + params);
        headers.put("Signature", "sig1=:" + Base64.getEncoder().encodeToString(hmac(secret, base)) + ":");
        return new Signed(Map.copyOf(headers), base);
    }

    static byte[] sha256(byte[] body) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(body);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    // The HMAC key is the whole secret string's UTF-8 bytes, prefix included.
    static byte[] hmac(String secret, String text) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
            return mac.doFinal(text.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException | InvalidKeyException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Both strings to sign side by side, the first differing line marked with ">". */
    public static String diffLines(String ours, String theirs) {
        String[] a = ours.split("\n", -1);
        String[] b = theirs.split("\n", -1);
        int width = 4;
        for (String line : a) width = Math.max(width, line.length());
        StringBuilder out = new StringBuilder(String.format("  %-" + width + "s | server's", "ours"));
        boolean marked = false;
        for (int i = 0; i < Math.max(a.length, b.length); i++) {
            String left = i < a.length ? a[i] : "";
            String right = i < b.length ? b[i] : "";
            String mark = " ";
            if (!left.equals(right) && !marked) {
                mark = ">";
                marked = true;
            }
            out.append('\n').append(mark).append(' ').append(String.format("%-" + width + "s", left)).append(" | ").append(right);
        }
        if (!marked) out.append("\n  (the lines are equal: the secret differs)");
        return out.toString();
    }
}
