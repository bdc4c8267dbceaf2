package dev.keygate.client;

import java.util.Map;

/** The headers to add to a request, and what was signed. */
public record Signed(Map<String, String> headers, String stringToSign) {}
