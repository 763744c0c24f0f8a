// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Workbench
/// @notice Storage work for executor tests and benchmarks: shared slots, chains of
///         dependent writes, reverts on demand, explicit balance reads, and a swap-like
///         call with real storage and arithmetic (~60k gas).
contract Workbench {
    mapping(uint256 => uint256) public slots;

    struct Pool {
        uint128 reserve0;
        uint128 reserve1;
        uint256 volume;
        uint256 swaps;
    }

    mapping(uint256 => Pool) public pools;
    mapping(address => uint256) public credit;

    error Unlucky(uint256 x);

    /// @notice slots[slot] += 1 (a read and a write of one slot).
    function bump(uint256 slot) external returns (uint256) {
        return ++slots[slot];
    }

    /// @notice slots[to] = slots[from] + 1.
    function copy(uint256 from, uint256 to) external {
        slots[to] = slots[from] + 1;
    }

    /// @notice Reverts when x is a multiple of 3, else writes it.
    function maybeRevert(uint256 slot, uint256 x) external {
        if (x % 3 == 0) revert Unlucky(x);
        slots[slot] = x;
    }

    /// @notice Stores an account's balance (an explicit BALANCE read).
    function recordBalance(uint256 slot, address who) external {
        slots[slot] = who.balance;
    }

    /// @notice Stores the block beneficiary's balance.
    function recordCoinbase(uint256 slot) external {
        slots[slot] = block.coinbase.balance;
    }

    /// @notice Forwards the value sent to `to`.
    function pay(address payable to) external payable {
        (bool ok,) = to.call{value: msg.value}("");
        require(ok, "payment failed");
    }

    /// @notice A constant-product swap on pool `id` with bookkeeping: ~60k gas.
    function swap(uint256 id, uint256 amountIn) external returns (uint256 out) {
        Pool storage p = pools[id];
        if (p.reserve0 == 0) {
            p.reserve0 = 1e24;
            p.reserve1 = 1e24;
        }
        uint256 inWithFee = amountIn * 997;
        out = (inWithFee * p.reserve1) / (uint256(p.reserve0) * 1000 + inWithFee);
        p.reserve0 += uint128(amountIn);
        p.reserve1 -= uint128(out);
        p.volume += amountIn;
        p.swaps += 1;
        uint256 acc = out;
        for (uint256 i = 0; i < 40; ++i) {
            acc = uint256(keccak256(abi.encode(acc, i))) % (amountIn + i + 1);
        }
        credit[msg.sender] += out + (acc % 2);
    }
}
