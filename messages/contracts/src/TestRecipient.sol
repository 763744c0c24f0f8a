// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IMessageRecipient} from "./IMessageRecipient.sol";

/// @title TestRecipient
/// @notice A recipient for tests: records what it receives and can be told to reject.
contract TestRecipient is IMessageRecipient {
    /// @notice When true, `handle` reverts with `Rejected`.
    bool public rejecting;
    /// @notice How many messages were handled.
    uint256 public received;

    event Received(uint32 indexed origin, bytes32 indexed sender, bytes body);

    error Rejected(uint32 origin, bytes32 sender);

    function setRejecting(bool rejecting_) external {
        rejecting = rejecting_;
    }

    /// @inheritdoc IMessageRecipient
    function handle(uint32 origin, bytes32 sender, bytes calldata body) external override {
        if (rejecting) revert Rejected(origin, sender);
        received += 1;
        emit Received(origin, sender, body);
    }
}
