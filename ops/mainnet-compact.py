#!/usr/bin/env python3
"""Writes the compact set of real mainnet blocks the repository carries, from a full data directory.

Usage: ops/mainnet-compact.py --from DIR --out executors/tests/data/mainnet

DIR is a directory `ops/mainnet-data.py` made from pevm's repository. The compact set is
what the conformance suite (`executors/tests/mainnet.rs`, `light-client/tests/mainnet_headers.rs`)
runs on every test run when no other data directory is given:

  OUT/blocks/<number>/{block,pre_state,bytecodes}.json.gz  the blocks of BLOCKS below, gzip'd
  OUT/headers.json.gz   every block's header (RPC form, with its hash; transactions dropped),
                        the complete blocks' and the incomplete ones' alike, for the header rules
  OUT/block_hashes.json the chain's hashes BLOCKHASH reads, unchanged
  OUT/README.md         provenance and the list

Why these blocks: every fork from Frontier to Cancun, each fork's first block where the set
has it, the three that destroy an account and create it again (116525, 1796867, 11114732),
cheap-transaction and contended blocks, an empty block, at about 3 MB gzip'd. gzip is
written with mtime 0, so the same input gives the same bytes.
"""

import argparse
import gzip
import json
import shutil
from pathlib import Path

# (number, why): every fork, the fork blocks the set has, and the hard cases.
BLOCKS = [
    (46147, "Frontier, one transaction"),
    (116525, "Frontier, destroys an account and creates it again"),
    (930196, "Frontier"),
    (1150000, "Homestead's first block"),
    (1796867, "Homestead, destroys an account and creates it again"),
    (2462997, "Homestead, state-clearing era contract calls"),
    (2641321, "Tangerine Whistle"),
    (2675000, "Spurious Dragon's first block"),
    (2688148, "Spurious Dragon"),
    (4370000, "Byzantium's first block (receipts carry a status from here)"),
    (5891667, "Byzantium, 380 cheap transactions"),
    (9068998, "Petersburg"),
    (9069000, "Istanbul's first block"),
    (11114732, "Istanbul, destroys an account and creates it again"),
    (12300570, "Berlin, 687 cheap transactions"),
    (13287210, "London, 1,414 transactions"),
    (14396881, "London, 1,346 contended transactions"),
    (15537393, "the last proof-of-work block"),
    (15537394, "the merge's first block"),
    (18426253, "Shanghai"),
    (19426587, "Cancun's first block"),
    (19910734, "Cancun, empty"),
    (19933122, "Cancun"),
]

FILES = ("block.json", "pre_state.json", "bytecodes.json")


def gzip_to(data, path):
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def header_of(block):
    """The block's RPC header: everything but its body."""
    return {k: v for k, v in block.items() if k not in ("transactions", "uncles", "withdrawals")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, type=Path, help="a full data directory")
    parser.add_argument("--out", required=True, type=Path, help="the compact set's directory")
    args = parser.parse_args()

    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "blocks").mkdir(parents=True)
    shutil.copy(args.source / "block_hashes.json", args.out / "block_hashes.json")

    rows = []
    for number, why in BLOCKS:
        source = args.source / "blocks" / str(number)
        target = args.out / "blocks" / str(number)
        target.mkdir()
        for name in FILES:
            gzip_to((source / name).read_bytes(), target / (name + ".gz"))
        txs = len(json.loads((source / "block.json").read_bytes())["transactions"])
        size = sum((target / (name + ".gz")).stat().st_size for name in FILES)
        rows.append(f"| {number} | {txs} | {size // 1024} KiB | {why} |")

    numbers = sorted(int(p.name) for p in (args.source / "blocks").iterdir() if p.name.isdigit())
    headers = [header_of(json.loads((args.source / "blocks" / str(n) / "block.json").read_bytes())) for n in numbers]
    gzip_to(json.dumps(headers, separators=(",", ":")).encode(), args.out / "headers.json.gz")

    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    lines = [
        "# Real mainnet blocks, compact",
        "",
        "The conformance suite's default data: a subset of the real Ethereum mainnet blocks",
        "github.com/risechain/pevm publishes in `data/ethereum` (MIT License, Copyright (c)",
        "2024-2025 RISE LABS), with their pre-state and the contract codes recovered from that",
        "folder's history (each keyed by the keccak256 computed from it). Made by",
        "`ops/mainnet-data.py` (the full set) and then `ops/mainnet-compact.py` (this subset);",
        "the loader checks every code against its hash and every header against the chain's hash.",
        "",
        f"- `headers.json.gz`: the headers of all {len(headers)} blocks of the full set (RPC form).",
        "- `block_hashes.json`: the chain's block hashes BLOCKHASH reads.",
        f"- `blocks/<number>/*.json.gz`: {len(BLOCKS)} blocks with their pre-state and codes, {total // 1024} KiB in all:",
        "",
        "| block | transactions | size | why |",
        "| --- | --- | --- | --- |",
        *rows,
    ]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"{len(BLOCKS)} blocks and {len(headers)} headers, {total // 1024} KiB, in {args.out}")


if __name__ == "__main__":
    main()
