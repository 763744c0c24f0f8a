// Writes messages/testdata/message_vectors.json: ferry messages encoded and hashed by an
// implementation independent of ferry's Rust code (plain JS and js-sha3), which the Rust
// codec and the deployed Mailbox are both tested against.
//
//   node ops/message-vectors.mjs           rewrite the file
//   node ops/message-vectors.mjs --check   exit 1 if it differs from what this script writes
//
// The valid vectors are dispatched by one Mailbox on chain 31337 in file order, so their
// nonces run 0, 1, 2, ... and their senders are addresses a test can impersonate.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));
const { keccak256 } = require("js-sha3");

const VERSION = 1;
const MAX_BODY = 16 * 1024;
const ORIGIN = 31337;

const hex = (bytes) => "0x" + Buffer.from(bytes).toString("hex");
const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const pad32 = (addr) => Buffer.concat([Buffer.alloc(12), Buffer.from(addr.slice(2), "hex")]);
function pattern(len, seed) {
  const b = Buffer.alloc(len);
  let x = seed >>> 0;
  for (let i = 0; i < len; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}
function encode(m) {
  return Buffer.concat([Buffer.from([m.version]), u32(m.nonce), u32(m.origin), m.sender, u32(m.destination), m.recipient, m.body]);
}

const alice = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"; // anvil dev account 0
const bob = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"; // anvil dev account 1
const carol = "0x1111111111111111111111111111111111111111"; // no code, no key: impersonated
const cases = [
  { name: "empty body", sender: alice, destination: 31338, recipient: pad32(carol), body: Buffer.alloc(0) },
  { name: "bridge transfer body", sender: alice, destination: 31338, recipient: pad32(carol),
    body: Buffer.concat([pad32(bob), Buffer.from("00".repeat(24) + "0de0b6b3a7640000", "hex")]) },
  { name: "one zero byte", sender: bob, destination: 1, recipient: pad32(bob), body: Buffer.from([0]) },
  { name: "largest destination, recipient not an address", sender: bob, destination: 0xffffffff,
    recipient: Buffer.from("ff".repeat(32), "hex"), body: pattern(33, 7) },
  { name: "1 KiB body", sender: carol, destination: 31338, recipient: pad32(alice), body: pattern(1024, 42) },
  { name: "largest body", sender: alice, destination: 31338, recipient: pad32(carol), body: pattern(MAX_BODY, 99) },
];

const vectors = cases.map((c, nonce) => {
  const m = { version: VERSION, nonce, origin: ORIGIN, sender: pad32(c.sender), destination: c.destination,
    recipient: c.recipient, body: c.body };
  const encoded = encode(m);
  return { name: c.name, version: m.version, nonce, origin: ORIGIN, sender: hex(m.sender), destination: c.destination,
    recipient: hex(m.recipient), body: hex(m.body), encoded: hex(encoded), id: "0x" + keccak256(encoded) };
});

const base = encode({ version: VERSION, nonce: 7, origin: ORIGIN, sender: pad32(alice), destination: 31338,
  recipient: pad32(carol), body: Buffer.alloc(0) });
const invalid = [
  { name: "empty", encoded: "0x", error: "too_short" },
  { name: "one byte short of a header", encoded: hex(base.subarray(0, 76)), error: "too_short" },
  { name: "body one byte over the limit", encoded: hex(Buffer.concat([base, Buffer.alloc(MAX_BODY + 1)])), error: "too_long" },
  { name: "version 0", encoded: hex(Buffer.concat([Buffer.from([0]), base.subarray(1)])), error: "unsupported_version" },
  { name: "version 2", encoded: hex(Buffer.concat([Buffer.from([2]), base.subarray(1)])), error: "unsupported_version" },
];

// TokenBridge's rate-limit bucket, modelled here independently of the Solidity: each
// case sets a bucket, then tries transfers at given seconds after it was set; a transfer
// goes through if the bucket (refilled since its last use, at most its capacity) holds
// it. `available_after` is what the bucket holds right after the step.
function bucketCase(name, capacity, refill, steps) {
  let level = capacity, updatedAt = 0n;
  const out = [];
  for (const [at, amount] of steps) {
    const refilled = level + (at - updatedAt) * refill;
    const available = capacity === 0n ? null : (refilled < capacity ? refilled : capacity);
    const ok = available === null || amount <= available;
    if (ok && available !== null) { level = available - amount; updatedAt = at; }
    const after = available === null ? null : (ok ? level : available);
    out.push({ at_secs: Number(at), amount: amount.toString(), ok, available_after: after === null ? null : after.toString() });
  }
  return { name, capacity: capacity.toString(), refill_per_second: refill.toString(), steps: out };
}
const E18 = 10n ** 18n;
// Steps start a second after the bucket is set and strictly increase: each is its
// own block.
const buckets = [
  bucketCase("drained, then refused, then refilled", 1000n, 10n, [[1n, 600n], [2n, 500n], [3n, 400n], [61n, 900n], [62n, 200n]]),
  bucketCase("exactly the whole bucket, twice", 500n, 5n, [[1n, 500n], [2n, 6n], [102n, 500n]]),
  bucketCase("no refill: what is spent is gone", 100n, 0n, [[1n, 60n], [1000n, 41n], [1001n, 40n]]),
  bucketCase("no limit", 0n, 0n, [[1n, 100000n * E18], [2n, 100000n * E18]]),
  bucketCase("a long pause refills to the brim, not past it", 100n * E18, 100n * E18, [[1n, 100n * E18], [315360000n, 100n * E18 + 1n], [315360001n, 100n * E18]]),
];

const out = JSON.stringify({ max_body_bytes: MAX_BODY, valid: vectors, invalid, rate_limits: buckets }, null, 2) + "\n";
const file = path.join(root, "messages/testdata/message_vectors.json");
if (process.argv.includes("--check")) {
  if (!fs.existsSync(file) || fs.readFileSync(file, "utf8") !== out) {
    console.error(`${path.relative(root, file)} is stale; run node ops/message-vectors.mjs`);
    process.exit(1);
  }
  console.log("message vectors are fresh");
} else {
  fs.writeFileSync(file, out);
  console.log(`wrote ${vectors.length} valid, ${invalid.length} invalid and ${buckets.length} rate-limit vectors to ${path.relative(root, file)}`);
}
