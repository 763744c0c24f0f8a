// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {BridgedToken} from "./BridgedToken.sol";
import {GasPaymaster} from "./GasPaymaster.sol";
import {IMessageRecipient} from "./IMessageRecipient.sol";
import {Mailbox} from "./Mailbox.sol";
import {Message} from "./Message.sol";

/// @title TokenBridge
/// @notice Moves one ERC-20 between chains through ferry Mailboxes. In collateral mode
///         it locks the token here and releases it when it comes back; in synthetic mode
///         it mints a BridgedToken here and burns it when it leaves.
///         Per remote chain and direction, an owner-set token bucket bounds what moves:
///         a transfer out over the outbound bucket reverts at dispatch, a release or mint
///         over the inbound bucket reverts in `handle` (and is tried again once the
///         bucket has refilled), so a forged or runaway flow loses at most a bucket.
///         With a paymaster set, a transfer pays for its own delivery: `transferRemote`
///         is sent with at least `quoteTransferRemote(destination)` in native token.
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

    /// @dev A token bucket: `level` tokens were available at `updatedAt`, and it refills
    ///      at `refillPerSecond` up to `capacity` (0: no limit).
    struct Bucket {
        uint256 capacity;
        uint256 refillPerSecond;
        uint256 level;
        uint256 updatedAt;
    }

    mapping(uint32 remote => mapping(bool inbound => Bucket)) private _buckets;

    /// @notice Where transfers pay for their delivery (none: deliveries are not paid for).
    GasPaymaster public paymaster;
    /// @notice The gas a transfer's delivery takes on each destination, as paid for.
    mapping(uint32 destination => uint256 gas) public deliveryGas;

    event RemoteBridgeEnrolled(uint32 indexed domain, bytes32 bridge);
    event SentTransferRemote(bytes32 indexed id, uint32 indexed destination, address indexed recipient, uint256 amount);
    event ReceivedTransferRemote(uint32 indexed origin, address indexed recipient, uint256 amount);
    event PaymasterSet(address paymaster);
    event DeliveryGasSet(uint32 indexed destination, uint256 gas);
    event RateLimitSet(uint32 indexed remote, bool indexed inbound, uint256 capacity, uint256 refillPerSecond);

    error NotMailbox(address caller);
    error NoRemoteBridge(uint32 domain);
    error UnenrolledSender(uint32 origin, bytes32 sender);
    error ZeroAmount();
    error ZeroRecipient();
    error MalformedBody(uint256 length);
    error UnexpectedPayment(uint256 value);
    error RateLimited(uint32 remote, bool inbound, uint256 amount, uint256 available, uint256 refillPerSecond);

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

    /// @notice Transfers pay for their delivery at `paymaster_` (the zero address: they
    ///         do not pay).
    function setPaymaster(GasPaymaster paymaster_) external onlyOwner {
        paymaster = paymaster_;
        emit PaymasterSet(address(paymaster_));
    }

    /// @notice A transfer to `destination` pays for `gas` gas of delivery there.
    function setDeliveryGas(uint32 destination, uint256 gas) external onlyOwner {
        deliveryGas[destination] = gas;
        emit DeliveryGasSet(destination, gas);
    }

    /// @notice What `transferRemote` to `destination` must be sent with, in native token.
    function quoteTransferRemote(uint32 destination) public view returns (uint256) {
        if (address(paymaster) == address(0)) return 0;
        return paymaster.quoteGasPayment(destination, deliveryGas[destination]);
    }

    /// @notice Bounds what moves to (`inbound` false) or from (`inbound` true) chain
    ///         `remote`: at most `capacity` at once, refilled at `refillPerSecond`
    ///         (capacity 0: no limit). The bucket starts full.
    function setRateLimit(uint32 remote, bool inbound, uint256 capacity, uint256 refillPerSecond) external onlyOwner {
        _buckets[remote][inbound] = Bucket(capacity, refillPerSecond, capacity, block.timestamp);
        emit RateLimitSet(remote, inbound, capacity, refillPerSecond);
    }

    /// @notice The bucket of chain `remote` in one direction; `available` is what may
    ///         move now (the maximum uint256 when there is no limit).
    function rateLimit(uint32 remote, bool inbound)
        external
        view
        returns (uint256 capacity, uint256 available, uint256 refillPerSecond)
    {
        Bucket storage bucket = _buckets[remote][inbound];
        return (bucket.capacity, _available(bucket), bucket.refillPerSecond);
    }

    /// @notice Sends `amount` to `recipient` on chain `destination`. In collateral mode
    ///         the caller approves this bridge for `amount` first. With a paymaster, the
    ///         value sent pays for the delivery (`quoteTransferRemote`; any excess comes
    ///         back to the caller).
    /// @return id The ferry message id.
    function transferRemote(uint32 destination, address recipient, uint256 amount)
        external
        payable
        returns (bytes32 id)
    {
        bytes32 remote = remoteBridge[destination];
        if (remote == bytes32(0)) revert NoRemoteBridge(destination);
        if (amount == 0) revert ZeroAmount();
        if (recipient == address(0)) revert ZeroRecipient();
        _consume(destination, false, amount);
        if (mode == Mode.Collateral) {
            IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        } else {
            BridgedToken(token).burn(msg.sender, amount);
        }
        id = mailbox.dispatch(destination, remote, abi.encode(recipient, amount));
        emit SentTransferRemote(id, destination, recipient, amount);
        if (address(paymaster) != address(0)) {
            paymaster.payForGas{value: msg.value}(id, destination, deliveryGas[destination], msg.sender);
        } else if (msg.value != 0) {
            revert UnexpectedPayment(msg.value);
        }
    }

    /// @inheritdoc IMessageRecipient
    function handle(uint32 origin, bytes32 sender, bytes calldata body) external override {
        if (msg.sender != address(mailbox)) revert NotMailbox(msg.sender);
        bytes32 enrolled = remoteBridge[origin];
        if (enrolled == bytes32(0) || sender != enrolled) revert UnenrolledSender(origin, sender);
        if (body.length != BODY_BYTES) revert MalformedBody(body.length);
        (address recipient, uint256 amount) = abi.decode(body, (address, uint256));
        _consume(origin, true, amount);
        if (mode == Mode.Collateral) {
            IERC20(token).safeTransfer(recipient, amount);
        } else {
            BridgedToken(token).mint(recipient, amount);
        }
        emit ReceivedTransferRemote(origin, recipient, amount);
    }

    /// @dev Takes `amount` out of a bucket, or reverts naming what is available.
    function _consume(uint32 remote, bool inbound, uint256 amount) private {
        Bucket storage bucket = _buckets[remote][inbound];
        if (bucket.capacity == 0) return;
        uint256 available = _available(bucket);
        if (amount > available) revert RateLimited(remote, inbound, amount, available, bucket.refillPerSecond);
        bucket.level = available - amount;
        bucket.updatedAt = block.timestamp;
    }

    /// @dev What a bucket holds now: its level refilled since its last use, at most its
    ///      capacity (computed so that a large rate or a long pause cannot overflow).
    function _available(Bucket storage bucket) private view returns (uint256) {
        if (bucket.capacity == 0) return type(uint256).max;
        uint256 room = bucket.capacity - bucket.level;
        uint256 elapsed = block.timestamp - bucket.updatedAt;
        if (bucket.refillPerSecond == 0) return bucket.level;
        if (elapsed >= room / bucket.refillPerSecond + 1) return bucket.capacity;
        return bucket.level + elapsed * bucket.refillPerSecond;
    }
}
