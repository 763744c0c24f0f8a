// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Message
/// @notice The packed ferry message, shared byte for byte with the Rust `Message`:
///         version u8 | nonce u32 | origin u32 | sender bytes32 | destination u32 |
///         recipient bytes32 | body, all big-endian; id = keccak256(message).
library Message {
    uint8 internal constant VERSION = 1;
    /// @dev Bytes before the body: 1 + 4 + 4 + 32 + 4 + 32.
    uint256 internal constant HEADER_BYTES = 77;
    /// @dev Largest body a Mailbox dispatches or accepts.
    uint256 internal constant MAX_BODY_BYTES = 16 * 1024;

    function format(
        uint32 nonce_,
        uint32 origin_,
        bytes32 sender_,
        uint32 destination_,
        bytes32 recipient_,
        bytes calldata body_
    ) internal pure returns (bytes memory) {
        return abi.encodePacked(VERSION, nonce_, origin_, sender_, destination_, recipient_, body_);
    }

    function version(bytes calldata message) internal pure returns (uint8) {
        return uint8(bytes1(message[0:1]));
    }

    function nonce(bytes calldata message) internal pure returns (uint32) {
        return uint32(bytes4(message[1:5]));
    }

    function origin(bytes calldata message) internal pure returns (uint32) {
        return uint32(bytes4(message[5:9]));
    }

    function sender(bytes calldata message) internal pure returns (bytes32) {
        return bytes32(message[9:41]);
    }

    function destination(bytes calldata message) internal pure returns (uint32) {
        return uint32(bytes4(message[41:45]));
    }

    function recipient(bytes calldata message) internal pure returns (bytes32) {
        return bytes32(message[45:77]);
    }

    function body(bytes calldata message) internal pure returns (bytes calldata) {
        return message[HEADER_BYTES:];
    }

    /// @dev The address inside a left-padded bytes32, or zero if the upper 12 bytes are not zero.
    function toAddress(bytes32 padded) internal pure returns (address) {
        if (uint256(padded) >> 160 != 0) return address(0);
        return address(uint160(uint256(padded)));
    }

    function toBytes32(address account) internal pure returns (bytes32) {
        return bytes32(uint256(uint160(account)));
    }
}
