// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {BridgedToken} from "./BridgedToken.sol";
import {IMessageRecipient} from "./IMessageRecipient.sol";
import {Mailbox} from "./Mailbox.sol";
import {Message} from "./Message.sol";

/// @title TokenBridge
/// @notice Moves one ERC-20 between chains through ferry Mailboxes. In collateral mode
///         it locks the token here and releases it when it comes back; in synthetic mode
///         it mints a BridgedToken here and burns it when it leaves.
/// @dev Message body: abi.encode(address recipient, uint256 amount).
contract TokenBridge is IMessageRecipient, Ownable {
    using SafeERC20 for IERC20;

    enum Mode {
        Collateral,
        Synthetic
    }

    uint256 private constant BODY_BYTES = 64;

    /// @notice The Mailbox this bridge dispatches through and accepts `handle` from.
    Mailbox public immutable mailbox;
    /// @notice The token locked (collateral) or minted (synthetic) here.
    address public immutable token;
    /// @notice Collateral or synthetic.
    Mode public immutable mode;
    /// @notice The bridge on each remote chain this one is enrolled with.
    mapping(uint32 domain => bytes32 bridge) public remoteBridge;

    event RemoteBridgeEnrolled(uint32 indexed domain, bytes32 bridge);
    event SentTransferRemote(bytes32 indexed id, uint32 indexed destination, address indexed recipient, uint256 amount);
    event ReceivedTransferRemote(uint32 indexed origin, address indexed recipient, uint256 amount);

    error NotMailbox(address caller);
    error NoRemoteBridge(uint32 domain);
    error UnenrolledSender(uint32 origin, bytes32 sender);
    error ZeroAmount();
    error ZeroRecipient();
    error MalformedBody(uint256 length);

    constructor(Mailbox mailbox_, address token_, Mode mode_, address owner_) Ownable(owner_) {
        mailbox = mailbox_;
        token = token_;
        mode = mode_;
    }

    /// @notice Accepts transfers from, and sends them to, `bridge` on chain `domain`.
    function enrollRemoteBridge(uint32 domain, bytes32 bridge) external onlyOwner {
        remoteBridge[domain] = bridge;
        emit RemoteBridgeEnrolled(domain, bridge);
    }

    /// @notice Sends `amount` to `recipient` on chain `destination`. In collateral mode
    ///         the caller approves this bridge for `amount` first.
    /// @return id The ferry message id.
    function transferRemote(uint32 destination, address recipient, uint256 amount) external returns (bytes32 id) {
        bytes32 remote = remoteBridge[destination];
        if (remote == bytes32(0)) revert NoRemoteBridge(destination);
        if (amount == 0) revert ZeroAmount();
        if (recipient == address(0)) revert ZeroRecipient();
        if (mode == Mode.Collateral) {
            IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        } else {
            BridgedToken(token).burn(msg.sender, amount);
        }
        id = mailbox.dispatch(destination, remote, abi.encode(recipient, amount));
        emit SentTransferRemote(id, destination, recipient, amount);
    }

    /// @inheritdoc IMessageRecipient
    function handle(uint32 origin, bytes32 sender, bytes calldata body) external override {
        if (msg.sender != address(mailbox)) revert NotMailbox(msg.sender);
        bytes32 enrolled = remoteBridge[origin];
        if (enrolled == bytes32(0) || sender != enrolled) revert UnenrolledSender(origin, sender);
        if (body.length != BODY_BYTES) revert MalformedBody(body.length);
        (address recipient, uint256 amount) = abi.decode(body, (address, uint256));
        if (mode == Mode.Collateral) {
            IERC20(token).safeTransfer(recipient, amount);
        } else {
            BridgedToken(token).mint(recipient, amount);
        }
        emit ReceivedTransferRemote(origin, recipient, amount);
    }
}
