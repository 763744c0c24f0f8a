// Compiles messages/contracts/src with the pinned solcjs and writes one artifact per
// contract to messages/contracts/out/<Name>.json ({contractName, compiler, abi,
// bytecode, deployedBytecode}), the shape alloy's `sol!` reads.
//
//   node ops/contracts.mjs            rebuild the committed artifacts
//   node ops/contracts.mjs --check    exit 1 if the committed artifacts are stale
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "package.json"));
const solc = require("solc");

const srcDir = "messages/contracts/src";
const outDir = path.join(root, "messages/contracts/out");
const check = process.argv.includes("--check");

const sources = {};
for (const file of fs.readdirSync(path.join(root, srcDir)).sort()) {
  if (file.endsWith(".sol")) {
    sources[`${srcDir}/${file}`] = { content: fs.readFileSync(path.join(root, srcDir, file), "utf8") };
  }
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    // london: no PUSH0 or MCOPY, so the contracts deploy on every fork anvil runs.
    evmVersion: "london",
    optimizer: { enabled: true, runs: 200 },
    remappings: ["@openzeppelin/=node_modules/@openzeppelin/"],
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

function findImports(importPath) {
  const full = path.join(root, importPath);
  if (!full.startsWith(root + path.sep) || !fs.existsSync(full)) return { error: `not found: ${importPath}` };
  return { contents: fs.readFileSync(full, "utf8") };
}

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
// Warnings fail the build too: the contracts stay warning-free.
const errors = (output.errors || []).filter((e) => e.severity !== "info");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

const artifacts = {};
for (const [file, contracts] of Object.entries(output.contracts)) {
  if (!file.startsWith(srcDir)) continue;
  for (const [name, c] of Object.entries(contracts)) {
    if (!c.evm.bytecode.object || c.abi.length === 0) continue; // interfaces and internal libraries
    const artifact = {
      contractName: name,
      compiler: `solc ${solc.version()}`,
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
    };
    artifacts[`${name}.json`] = JSON.stringify(artifact, null, 2) + "\n";
  }
}

let stale = [];
const existing = fs.existsSync(outDir) ? fs.readdirSync(outDir).filter((f) => f.endsWith(".json")) : [];
for (const f of existing) if (!(f in artifacts)) stale.push(`${f} (no longer built)`);
for (const [f, text] of Object.entries(artifacts)) {
  const p = path.join(outDir, f);
  if (!fs.existsSync(p) || fs.readFileSync(p, "utf8") !== text) stale.push(f);
}

if (check) {
  if (stale.length > 0) {
    console.error(`contract artifacts are stale: ${stale.join(", ")}; run ops/contracts.sh`);
    process.exit(1);
  }
  console.log(`contract artifacts are fresh (${Object.keys(artifacts).length} contracts)`);
} else {
  fs.mkdirSync(outDir, { recursive: true });
  for (const f of existing) if (!(f in artifacts)) fs.rmSync(path.join(outDir, f));
  for (const [f, text] of Object.entries(artifacts)) fs.writeFileSync(path.join(outDir, f), text);
  console.log(`wrote ${Object.keys(artifacts).length} artifacts to ${path.relative(root, outDir)}`);
}
