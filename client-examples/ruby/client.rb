#!/usr/bin/env ruby
# Call a keygate-protected API with KG1-HMAC-SHA256 signatures.
#
# Ruby 2.7+, standard library only (openssl, net/http, json). Copy
# kg1_sign (and kg1_send if you use Net::HTTP) into your backend; the rest
# of this file is a demo.
#
#   KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... ruby client.rb
require "json"
require "net/http"
require "openssl"
require "securerandom"
require "uri"

KG1_SCHEME = "KG1-HMAC-SHA256"

# Returns [authorization header, string to sign] for one request.
#
# target: path and query exactly as they go on the request line
#         ("/v1/orders?id=7&q=a%20b"): not decoded, not re-ordered.
# body:   the exact bytes you send ("" for none). Generate JSON once, sign
#         that string and send that string.
def kg1_sign(key_id, secret, method, target, body, timestamp: nil, nonce: nil)
  timestamp = (timestamp || Time.now.to_i).to_s
  nonce ||= SecureRandom.hex(16) # fresh for every request, retries too
  string_to_sign = [
    KG1_SCHEME,
    key_id,
    timestamp,
    nonce,
    method.upcase,
    target,
    OpenSSL::Digest::SHA256.hexdigest(body.b),
  ].join("\n")
  signature = OpenSSL::HMAC.hexdigest("SHA256", secret, string_to_sign)
  ["#{KG1_SCHEME} KeyId=#{key_id}, Timestamp=#{timestamp}, Nonce=#{nonce}, Signature=#{signature}", string_to_sign]
end

# Signs and sends one request. Returns [status, parsed JSON (or the raw
# text), string to sign].
def kg1_send(key_id, secret, method, url, body = "", headers = {})
  uri = URI(url)
  # Net::HTTP puts uri.request_uri (path and query as written) on the
  # request line: sign that.
  authorization, string_to_sign = kg1_sign(key_id, secret, method, uri.request_uri, body)
  request = Net::HTTPGenericRequest.new(method.upcase, !body.empty?, true, uri.request_uri,
                                        headers.merge("Authorization" => authorization))
  request.body = body unless body.empty?
  response = Net::HTTP.start(uri.host, uri.port, use_ssl: uri.scheme == "https",
                                                 open_timeout: 30, read_timeout: 30) do |http|
    http.request(request)
  end
  raw = response.body.to_s.force_encoding(Encoding::UTF_8)
  answer = begin
    JSON.parse(raw)
  rescue JSON::ParserError
    raw
  end
  [response.code.to_i, answer, string_to_sign]
end

# Prints the error code and, for a signature mismatch, both strings to sign
# side by side.
def kg1_explain_refusal(answer, ours)
  error = answer.is_a?(Hash) ? (answer["error"] || {}) : {}
  puts "  refused: #{error.fetch("code", "?")}: #{error.fetch("message", answer.inspect)}"
  if error["code"] == "signature_mismatch"
    theirs = error.fetch("string_to_sign", "")
    puts "  string to sign, ours | server's ('!' marks a difference):"
    a = ours.split("\n", -1)
    b = theirs.split("\n", -1)
    [a.length, b.length].max.times do |i|
      x = a[i] || ""
      y = b[i] || ""
      puts "  #{x == y ? " " : "!"} #{x.ljust(66)} | #{y}"
    end
    if ours == theirs
      puts "  the strings match, so the secret is wrong: use the whole secret of this key id, sk_ prefix included"
    end
  end
  if error["code"] == "timestamp_out_of_range"
    puts "  server_time=#{error["server_time"]} our time=#{Time.now.to_i}: fix the clock (NTP)"
  end
end

# Test hook: tab-separated key_id, secret, method, target, timestamp, nonce,
# body_hex lines on stdin; one Authorization header per line on stdout.
def kg1_sign_vectors
  $stdin.each_line do |line|
    line = line.chomp
    next if line.empty?
    key_id, secret, method, target, timestamp, nonce, body_hex = line.split("\t", -1)
    body = [body_hex].pack("H*")
    puts kg1_sign(key_id, secret, method, target, body, timestamp: timestamp, nonce: nonce)[0]
  end
end

def main
  base = ENV.fetch("KEYGATE_URL").chomp("/")
  key_id = ENV.fetch("KEYGATE_KEY_ID")
  secret = ENV.fetch("KEYGATE_SECRET")
  body = JSON.generate({ order_id: 7, note: "café – 東京 ✓" })
  calls = [
    ["GET", "/v1/whoami?probe=1&x=a%20b", ""],
    ["POST", "/v1/echo", body],
  ]
  ok = true
  calls.each do |method, target, payload|
    headers = payload.empty? ? {} : { "Content-Type" => "application/json" }
    status, answer, string_to_sign = kg1_send(key_id, secret, method, base + target, payload, headers)
    puts "#{method} #{target} -> #{status}"
    if (200..299).cover?(status)
      puts "  #{JSON.generate(answer)}"
    else
      ok = false
      kg1_explain_refusal(answer, string_to_sign)
    end
  end
  ok ? 0 : 1
end

if $PROGRAM_NAME == __FILE__
  if ARGV == ["--sign-vectors"]
    kg1_sign_vectors
    exit 0
  end
  exit main
end
