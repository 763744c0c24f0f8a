// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {IMessageRecipient} from "./IMessageRecipient.sol";
import {Message} from "./Message.sol";

/// @title Mailbox
/// @notice Dispatches ferry messages from this chain and delivers messages from others.
/// @dev A message is delivered once a quorum of this Mailbox's validator set has signed
///      the EIP-191 form of
///      keccak256("FERRY" | origin u32 | originMailbox bytes32 | destination u32 | blockHash | id),
///      where originMailbox is the Mailbox enrolled for the origin chain and blockHash the
///      origin block that holds the Dispatch. Metadata = blockHash (32 bytes) followed by
///      65-byte signatures (r | s | v) whose signers are strictly ascending, which makes
///      them distinct without storage.
contract Mailbox is Ownable {
    using Message for bytes;

    uint256 private constant SIGNATURE_BYTES = 65;

    /// @notice This chain's id, the `origin` of what it dispatches.
    uint32 public immutable localDomain;
    /// @notice Nonce of the next dispatched message.
    uint32 public nonce;
    /// @notice Whether a message id has been delivered here.
    mapping(bytes32 id => bool) public delivered;
    /// @notice The Mailbox on each origin chain whose messages this one accepts.
    mapping(uint32 domain => bytes32 mailbox) public remoteMailbox;
    /// @notice Whether an address belongs to the validator set.
    mapping(address validator => bool) public isValidator;
    /// @notice Distinct validator signatures needed to deliver a message.
    uint8 public threshold;
    address[] private _validators;

    event Dispatch(bytes32 indexed id, bytes message);
    event Process(bytes32 indexed id, uint32 indexed origin, bytes32 indexed sender, address recipient);
    event ProcessFailed(bytes32 indexed id, bytes reason);
    event ValidatorSetChanged(address[] validators, uint8 threshold);
    event RemoteMailboxEnrolled(uint32 indexed domain, bytes32 mailbox);

    error ChainIdTooLarge(uint256 chainId);
    error BodyTooLarge(uint256 length, uint256 max);
    error MalformedMessage(uint256 length);
    error UnsupportedVersion(uint8 version);
    error WrongDestination(uint32 expected, uint32 actual);
    error UnknownOrigin(uint32 origin);
    error InvalidRecipient(bytes32 recipient);
    error AlreadyDelivered(bytes32 id);
    error MalformedMetadata(uint256 length);
    error InsufficientSignatures(uint256 count, uint256 threshold);
    error InvalidSignature(uint256 index);
    error SignersNotAscending(address previous, address signer);
    error NotValidator(address signer);
    error InvalidValidatorSet(uint256 count, uint8 threshold);
    error BatchLengthMismatch(uint256 metadata, uint256 messages);
    error OnlySelf();

    constructor(address owner_, address[] memory validators_, uint8 threshold_) Ownable(owner_) {
        if (block.chainid > type(uint32).max) revert ChainIdTooLarge(block.chainid);
        localDomain = uint32(block.chainid);
        _setValidators(validators_, threshold_);
    }

    // ---------------------------------------------------------------- dispatch

    /// @notice Sends `body` to `recipient` on chain `destination`.
    /// @return id keccak256 of the packed message, as emitted in `Dispatch`.
    function dispatch(uint32 destination, bytes32 recipient, bytes calldata body) external returns (bytes32 id) {
        if (body.length > Message.MAX_BODY_BYTES) revert BodyTooLarge(body.length, Message.MAX_BODY_BYTES);
        bytes memory message =
            Message.format(nonce, localDomain, Message.toBytes32(msg.sender), destination, recipient, body);
        id = keccak256(message);
        nonce += 1;
        emit Dispatch(id, message);
    }

    // ---------------------------------------------------------------- delivery

    /// @notice Delivers one message; reverts with the reason if it cannot be delivered.
    function process(bytes calldata metadata, bytes calldata message) external {
        _process(metadata, message);
    }

    /// @notice Delivers several messages. An item that fails does not undo the others: it
    ///         emits `ProcessFailed` with its id and revert data and stays undelivered.
    /// @return count How many messages were delivered.
    function processBatch(bytes[] calldata metadata, bytes[] calldata messages) external returns (uint256 count) {
        if (metadata.length != messages.length) revert BatchLengthMismatch(metadata.length, messages.length);
        for (uint256 i = 0; i < messages.length; ++i) {
            try this.processItem(metadata[i], messages[i]) {
                ++count;
            } catch (bytes memory reason) {
                emit ProcessFailed(keccak256(messages[i]), reason);
            }
        }
    }

    /// @notice One item of `processBatch`, called by this contract only so that its
    ///         failure reverts just this item.
    function processItem(bytes calldata metadata, bytes calldata message) external {
        if (msg.sender != address(this)) revert OnlySelf();
        _process(metadata, message);
    }

    function _process(bytes calldata metadata, bytes calldata message) private {
        if (message.length < Message.HEADER_BYTES || message.length > Message.HEADER_BYTES + Message.MAX_BODY_BYTES) {
            revert MalformedMessage(message.length);
        }
        if (message.version() != Message.VERSION) revert UnsupportedVersion(message.version());
        if (message.destination() != localDomain) revert WrongDestination(localDomain, message.destination());
        uint32 origin = message.origin();
        bytes32 originMailbox = remoteMailbox[origin];
        if (originMailbox == bytes32(0)) revert UnknownOrigin(origin);
        address recipient = Message.toAddress(message.recipient());
        if (recipient.code.length == 0) revert InvalidRecipient(message.recipient());

        bytes32 id = keccak256(message);
        if (delivered[id]) revert AlreadyDelivered(id);
        if (metadata.length < 32 || (metadata.length - 32) % SIGNATURE_BYTES != 0) {
            revert MalformedMetadata(metadata.length);
        }
        _verifyQuorum(attestationDigest(origin, originMailbox, localDomain, bytes32(metadata[0:32]), id), metadata);

        // Effects before the call: a re-entrant delivery of the same id fails.
        delivered[id] = true;
        bytes32 sender = message.sender();
        emit Process(id, origin, sender, recipient);
        IMessageRecipient(recipient).handle(origin, sender, message.body());
    }

    // ---------------------------------------------------------------- signatures

    /// @notice The digest validators sign (before the EIP-191 prefix).
    function attestationDigest(uint32 origin, bytes32 originMailbox, uint32 destination, bytes32 blockHash, bytes32 id)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encodePacked("FERRY", origin, originMailbox, destination, blockHash, id));
    }

    function _verifyQuorum(bytes32 digest, bytes calldata metadata) private view {
        uint256 count = (metadata.length - 32) / SIGNATURE_BYTES;
        if (count < threshold) revert InsufficientSignatures(count, threshold);
        bytes32 signed = MessageHashUtils.toEthSignedMessageHash(digest);
        address previous = address(0);
        for (uint256 i = 0; i < count; ++i) {
            uint256 at = 32 + i * SIGNATURE_BYTES;
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(
                signed, uint8(metadata[at + 64]), bytes32(metadata[at:at + 32]), bytes32(metadata[at + 32:at + 64])
            );
            if (err != ECDSA.RecoverError.NoError) revert InvalidSignature(i);
            if (signer <= previous) revert SignersNotAscending(previous, signer);
            if (!isValidator[signer]) revert NotValidator(signer);
            previous = signer;
        }
    }

    // ---------------------------------------------------------------- administration

    /// @notice The current validator set.
    function validators() external view returns (address[] memory) {
        return _validators;
    }

    /// @notice Replaces the validator set and threshold.
    function setValidators(address[] calldata validators_, uint8 threshold_) external onlyOwner {
        _setValidators(validators_, threshold_);
    }

    /// @notice Accepts messages from `mailbox` on chain `domain` (zero to stop accepting).
    function enrollRemoteMailbox(uint32 domain, bytes32 mailbox) external onlyOwner {
        remoteMailbox[domain] = mailbox;
        emit RemoteMailboxEnrolled(domain, mailbox);
    }

    function _setValidators(address[] memory validators_, uint8 threshold_) private {
        if (threshold_ == 0 || threshold_ > validators_.length) revert InvalidValidatorSet(validators_.length, threshold_);
        for (uint256 i = 0; i < _validators.length; ++i) {
            isValidator[_validators[i]] = false;
        }
        for (uint256 i = 0; i < validators_.length; ++i) {
            address v = validators_[i];
            if (v == address(0) || isValidator[v]) revert InvalidValidatorSet(validators_.length, threshold_);
            isValidator[v] = true;
        }
        _validators = validators_;
        threshold = threshold_;
        emit ValidatorSetChanged(validators_, threshold_);
    }
}
