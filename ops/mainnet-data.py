#!/usr/bin/env python3
"""Builds a self-contained set of real Ethereum mainnet test blocks from pevm's git history.

Usage: ops/mainnet-data.py --pevm-git DIR --out DIR

DIR is a (bare) git directory of github.com/risechain/pevm. The script writes:
  OUT/blocks/<number>/{block.json,pre_state.json}  copied unchanged from HEAD:data/ethereum/blocks
  OUT/blocks/<number>/bytecodes.json  {"0x<keccak256(code)>": "0x<code>"}: the codes that
                         block's pre-state references and history still has
  OUT/block_hashes.json  {"<number>": "0x<hash>"} decoded from HEAD:data/ethereum/block_hashes.bincode
  OUT/README.md          provenance and a per-block coverage table

Why: the pre-states at HEAD only carry `code_hash`; the codes themselves live in
data/ethereum/bytecodes.bincode.gz, which our snapshot of the repository lacks (it
omits files of 4 MiB and more, and some old blobs). Older commits stored codes inline
in pre_state.json, in per-block bytecodes.json files and in small bytecodes.bincode
files, so the script walks every commit, decodes every readable version of those files
and keys each code by the keccak256 it computes itself (stored hashes are never
trusted). Unreadable blobs are skipped and counted. It then reports, per HEAD block,
how many referenced code hashes are still missing.

Needs Python 3.9+ and pycryptodome (`pip install pycryptodome`) for keccak256.
"""

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path

try:
    from Crypto.Hash import keccak
except ImportError:
    sys.exit("mainnet-data.py needs pycryptodome for keccak256: pip install pycryptodome")

HEAD_BLOCKS = "data/ethereum/blocks"
HEAD_BLOCK_HASHES = "data/ethereum/block_hashes.bincode"
STATE_FILES = ("pre_state.json", "state_for_execution.json")
BYTECODES_JSON = "bytecodes.json"
BYTECODES_BINCODE = ("bytecodes.bincode", "bytecodes.bincode.gz")
EMPTY_CODE_HASH = "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
EIP7702_MAGIC = bytes.fromhex("ef0100")
FORKS = (  # (first block, name), ascending
    (0, "Frontier"),
    (1_150_000, "Homestead"),
    (2_463_000, "Tangerine"),
    (2_675_000, "Spurious"),
    (4_370_000, "Byzantium"),
    (7_280_000, "Petersburg"),
    (9_069_000, "Istanbul"),
    (12_244_000, "Berlin"),
    (12_965_000, "London"),
    (15_537_394, "Paris"),
    (17_034_870, "Shanghai"),
    (19_426_587, "Cancun"),
)


def keccak256(data):
    return "0x" + keccak.new(data=data, digest_bits=256).hexdigest()


def fork_of(number):
    return [name for first, name in FORKS if number >= first][-1]


class Git:
    """Reads objects through one long-lived `git cat-file --batch` process."""

    def __init__(self, git_dir):
        self.git_dir = git_dir
        self.proc = subprocess.Popen(
            ["git", "--git-dir", git_dir, "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def rev_parse(self, rev):
        return self._run("rev-parse", rev).strip()

    def all_commits(self):
        return self._run("rev-list", "--all").split()

    def _run(self, *args):
        return subprocess.check_output(["git", "--git-dir", self.git_dir, *args], text=True)

    def read(self, rev):
        """Returns the bytes of an object, or None if the snapshot lacks it."""
        self.proc.stdin.write(rev.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if header[-1] == b"missing":
            return None
        data = self.proc.stdout.read(int(header[2]))
        self.proc.stdout.read(1)  # trailing newline
        return data

    def tree(self, rev):
        """Yields (mode, name, sha) of a tree object; nothing if it is absent."""
        data = self.read(rev)
        i = 0
        while data and i < len(data):
            space = data.index(b" ", i)
            nul = data.index(b"\0", space)
            yield data[i:space].decode(), data[space + 1 : nul].decode(), data[nul + 1 : nul + 21].hex()
            i = nul + 21


def collect_data_blobs(git):
    """Every distinct (file name, blob) of a code-carrying file in any commit's tree."""
    wanted = set(STATE_FILES) | {BYTECODES_JSON} | set(BYTECODES_BINCODE)
    found, seen_trees = set(), set()

    def walk(tree):
        if tree in seen_trees:
            return
        seen_trees.add(tree)
        for mode, name, sha in git.tree(tree):
            if mode == "40000":
                walk(sha)
            elif name in wanted:
                found.add((name, sha))

    for commit in git.all_commits():
        data = git.read(commit)
        walk(data.split(b"\n", 1)[0].split()[1].decode())
    return sorted(found)


def code_from_json(value):
    """Raw code bytes from one of the JSON shapes pevm and revm have used, or None."""
    if value is None:
        return None
    if "LegacyRaw" in value:
        return bytes.fromhex(value["LegacyRaw"][2:])
    analyzed = value.get("LegacyAnalyzed", value)
    # Analyzed code is padded; the original code is its first original_len bytes.
    return bytes.fromhex(analyzed["bytecode"][2:])[: analyzed["original_len"]]


def codes_from_state_json(state):
    """Codes of a pre-state: {address: {info|basic: {code?}, code?, ...}}."""
    for account in state.values():
        nested = account.get("info") or account.get("basic") or {}
        code = code_from_json(nested.get("code", account.get("code")))
        if code:
            yield code


def codes_from_bytecodes_json(bytecodes):
    """Codes of a {hash: code} JSON map."""
    for value in bytecodes.values():
        code = code_from_json(value)
        if code:
            yield code


class BincodeReader:
    """Minimal bincode reader: v1 (fixed-width ints, u32 enum tags) or v2 standard (varints)."""

    def __init__(self, data, varint):
        self.data, self.pos, self.varint = data, 0, varint

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self):
        return self.take(1)[0]

    def uint(self):
        """A u64/usize/length: 8 bytes LE in v1, a varint in v2."""
        if not self.varint:
            return int.from_bytes(self.take(8), "little")
        first = self.byte()
        widths = {251: 2, 252: 4, 253: 8, 254: 16}
        return int.from_bytes(self.take(widths[first]), "little") if first in widths else first

    def tag(self):
        """An enum variant index: u32 LE in v1, a varint in v2."""
        return int.from_bytes(self.take(4), "little") if not self.varint else self.uint()

    def bytes(self):
        return self.take(self.uint())

    def at_end(self):
        return self.pos == len(self.data)


def read_analyzed_code(reader):
    """pevm LegacyAnalyzedCode / revm analyzed legacy code: padded bytes, length, bitvec jump table."""
    padded, original_len = reader.bytes(), reader.uint()
    reader.bytes()  # jump table: bitvec order name,
    reader.take(2)  # head {width, index},
    reader.uint()  # bit count,
    reader.bytes()  # and the u8 words
    return padded[:original_len]


def read_evm_code_v1(reader):
    """pevm EvmCode of Sept 2024: LegacyAnalyzed(LegacyAnalyzedCode) | Eip7702{address, version, raw}."""
    if reader.tag() == 0:
        return read_analyzed_code(reader)
    reader.bytes()  # delegated address
    reader.byte()  # version
    return reader.bytes()  # raw: magic, version and address


def read_evm_code_v2(reader):
    """pevm EvmCode at HEAD: Legacy(LegacyCode) | Eip7702(Address)."""
    if reader.tag() == 0:
        return read_analyzed_code(reader)
    return EIP7702_MAGIC + reader.bytes()


# (bincode varint?, value reader): the layouts data/**/bytecodes.bincode* have had.
BINCODE_LAYOUTS = (
    (False, read_evm_code_v1),
    (False, read_analyzed_code),
    (True, read_evm_code_v2),
)


def codes_from_bincode(data):
    """Codes of a bincode map {B256: code} in whichever known layout decodes the whole file."""
    for varint, read_value in BINCODE_LAYOUTS:
        try:
            reader = BincodeReader(data, varint)
            codes = []
            for _ in range(reader.uint()):
                reader.bytes()  # stored hash, not trusted
                codes.append(read_value(reader))
            if reader.at_end():
                return codes
        except ValueError:
            continue
    raise ValueError("no known bincode layout fits")


def codes_from_blob(name, data):
    if name in BYTECODES_BINCODE:
        return codes_from_bincode(gzip.decompress(data) if name.endswith(".gz") else data)
    parsed = json.loads(data)
    return codes_from_bytecodes_json(parsed) if name == BYTECODES_JSON else codes_from_state_json(parsed)


def recover_bytecodes(git):
    """{keccak256: code} over every readable data blob in history, plus per-file-kind stats."""
    bytecodes, stats = {}, {}
    for name, sha in collect_data_blobs(git):
        stat = stats.setdefault(name, {"read": 0, "missing": 0, "undecodable": 0})
        data = git.read(sha)
        if data is None:
            stat["missing"] += 1
            continue
        try:
            codes = list(codes_from_blob(name, data))
        except (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError):
            stat["undecodable"] += 1
            continue
        stat["read"] += 1
        for code in codes:
            bytecodes[keccak256(code)] = code
    return bytecodes, stats


def decode_block_hashes(data):
    """block_hashes.bincode: bincode v2 standard map {u64 varint: B256 as 32 length-prefixed bytes}."""
    reader = BincodeReader(data, varint=True)
    hashes = {}
    for _ in range(reader.uint()):
        number = reader.uint()
        hashes[number] = "0x" + reader.bytes().hex()
    if not reader.at_end():
        raise ValueError("trailing bytes in block_hashes.bincode")
    return dict(sorted(hashes.items()))


def copy_head_blocks(git, out):
    """Copies HEAD's block.json/pre_state.json files; returns {number: pre_state}."""
    pre_states = {}
    for _, number, tree in git.tree(git.rev_parse(f"HEAD:{HEAD_BLOCKS}")):
        block_dir = out / "blocks" / number
        block_dir.mkdir(parents=True, exist_ok=True)
        for _, name, sha in git.tree(tree):
            data = git.read(sha)
            (block_dir / name).write_bytes(data)
            if name == "pre_state.json":
                pre_states[int(number)] = json.loads(data)
    return dict(sorted(pre_states.items()))


def referenced_codes(state):
    """The code hashes a pre-state references, but the empty code's."""
    return {a["code_hash"] for a in state.values() if a.get("code_hash")} - {EMPTY_CODE_HASH}


def write_block_bytecodes(out, pre_states, bytecodes):
    """Writes each block's own bytecodes.json: the referenced codes that were recovered."""
    for number, state in pre_states.items():
        codes = {h: "0x" + bytecodes[h].hex() for h in sorted(referenced_codes(state)) if h in bytecodes}
        write_json(out / "blocks" / str(number) / BYTECODES_JSON, codes)


def coverage(pre_states, bytecodes):
    """{number: (referenced code hashes, missing ones)} for each block."""
    result = {}
    for number, state in pre_states.items():
        referenced = referenced_codes(state)
        result[number] = (len(referenced), len(referenced - bytecodes.keys()))
    return result


def write_json(path, value):
    path.write_text(json.dumps(value, indent=0) + "\n")


def write_readme(out, git_dir, head, stats, bytecodes, block_hashes, cov):
    complete = [n for n, (_, missing) in cov.items() if missing == 0]
    lines = [
        "# Ethereum mainnet test blocks",
        "",
        f"Made by `ops/mainnet-data.py --pevm-git {git_dir}` from github.com/risechain/pevm at commit `{head}`.",
        "",
        f"- `blocks/<number>/block.json`, `pre_state.json`: {len(cov)} blocks copied unchanged from `{HEAD_BLOCKS}`.",
        "  block.json is an RPC block with full transactions; pre_state.json maps address to",
        "  `{balance, nonce, code_hash?, storage}` (hex quantities, nonce an integer, code_hash absent for EOAs).",
        f"- `block_hashes.json`: {len(block_hashes)} block hashes decoded from `{HEAD_BLOCK_HASHES}`",
        "  (bincode 2 standard config: varint map length, then varint u64 number and 0x20-prefixed 32 bytes per entry).",
        f"- `blocks/<number>/bytecodes.json`: the codes each block references, keyed by keccak256 computed",
        f"  here ({len(bytecodes)} distinct codes recovered in all).",
        "",
        "pevm's aggregated `data/ethereum/bytecodes.bincode.gz` was not in the snapshot, so codes were",
        "recovered from every readable version, in any commit, of these files:",
        "",
        "| file name | versions read | missing blobs | undecodable |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {s['read']} | {s['missing']} | {s['undecodable']} |" for name, s in sorted(stats.items())]
    lines += [
        "",
        f"{len(complete)} of {len(cov)} blocks are complete (every referenced code hash, other than the empty one, is present).",
        "",
        "| block | fork | code hashes | missing | complete |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {n} | {fork_of(n)} | {ref} | {missing} | {'yes' if missing == 0 else 'no'} |"
        for n, (ref, missing) in cov.items()
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pevm-git", required=True, help="git directory of risechain/pevm")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    args = parser.parse_args()

    git = Git(args.pevm_git)
    head = git.rev_parse("HEAD")
    args.out.mkdir(parents=True, exist_ok=True)

    pre_states = copy_head_blocks(git, args.out)
    block_hashes = decode_block_hashes(git.read(git.rev_parse(f"HEAD:{HEAD_BLOCK_HASHES}")))
    write_json(args.out / "block_hashes.json", {str(n): h for n, h in block_hashes.items()})

    bytecodes, stats = recover_bytecodes(git)
    write_block_bytecodes(args.out, pre_states, bytecodes)

    cov = coverage(pre_states, bytecodes)
    write_readme(args.out, args.pevm_git, head, stats, bytecodes, block_hashes, cov)

    for name, s in sorted(stats.items()):
        print(f"{name}: {s['read']} read, {s['missing']} missing, {s['undecodable']} undecodable")
    print(f"{len(bytecodes)} distinct codes recovered")
    for number, (referenced, missing) in cov.items():
        print(f"block {number} ({fork_of(number)}): {referenced} code hashes, {missing} missing")
    complete = sum(1 for _, missing in cov.values() if missing == 0)
    print(f"{complete} of {len(cov)} blocks complete")


if __name__ == "__main__":
    main()
