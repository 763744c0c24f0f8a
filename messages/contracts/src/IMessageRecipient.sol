// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title IMessageRecipient
/// @notice What a contract implements to receive ferry messages from its Mailbox.
interface IMessageRecipient {
    /// @notice Called by the destination Mailbox once a message carries a valid quorum.
    /// @param origin EIP-155 chain id of the chain the message was dispatched on.
    /// @param sender The dispatching contract on `origin`, left-padded to 32 bytes.
    /// @param body The application payload.
    function handle(uint32 origin, bytes32 sender, bytes calldata body) external;
}
