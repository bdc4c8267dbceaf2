package dev.keygate.client;

/** The signature scheme. */
public enum Scheme {
    /** KG1-HMAC-SHA256: one Authorization header (the default). */
    KG1,
    /** RFC 9421 HTTP Message Signatures with alg hmac-sha256. */
    RFC9421
}
