// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title GasPaymaster
/// @notice Sells delivery gas on the origin chain: a sender pays here, in this chain's
///         native token, for the gas a relayer will spend delivering its message on the
///         destination, and relayers deliver what was paid for. The owner sets, per
///         destination, the gas price there and the exchange rate of its native token to
///         this chain's, with a fixed overhead of gas per message; payments accumulate per
///         message id (a top-up adds to it), and the beneficiary (the relayer operator)
///         claims the balance.
contract GasPaymaster is Ownable {
    /// @notice The exchange rate's fixed point: a rate of 1e10 is one to one.
    uint256 public constant RATE_SCALE = 1e10;

    /// @notice What gas costs on one destination.
    /// @param gasPrice The destination's gas price, in its native token's wei.
    /// @param exchangeRate Wei of this chain's native token per wei of the destination's,
    ///        times RATE_SCALE (0: no quote for that destination).
    /// @param overhead Gas charged per message on top of the gas limit asked for: its
    ///        share of the batch transaction and of the certificate's checks.
    struct Oracle {
        uint128 gasPrice;
        uint128 exchangeRate;
        uint96 overhead;
    }

    /// @notice The quote's inputs per destination chain.
    mapping(uint32 destination => Oracle) public oracles;
    /// @notice What one message paid so far (each top-up adds to it).
    /// @param gas Destination gas paid for: the gas limits asked for, each with the
    ///        destination's overhead (what a relayer's delivery of it takes in all).
    /// @param fee Native token of this chain paid, in wei.
    struct Payment {
        uint256 gas;
        uint256 fee;
    }

    /// @notice What each message id paid for its delivery so far.
    mapping(bytes32 id => Payment) public payments;
    /// @notice Who may claim the payments.
    address public beneficiary;

    event GasPayment(bytes32 indexed id, uint32 indexed destination, uint256 gasLimit, uint256 payment);
    event OracleSet(uint32 indexed destination, uint128 gasPrice, uint128 exchangeRate, uint96 overhead);
    event BeneficiarySet(address beneficiary);
    event Claimed(address indexed to, uint256 amount);

    error NoQuote(uint32 destination);
    error Underpaid(uint256 required, uint256 paid);
    error TransferFailed(address to, uint256 amount);
    error NotBeneficiary(address caller);

    constructor(address owner_, address beneficiary_) Ownable(owner_) {
        beneficiary = beneficiary_;
        emit BeneficiarySet(beneficiary_);
    }

    /// @notice Sets what gas costs on `destination` (an exchange rate of 0 stops quotes).
    function setOracle(uint32 destination, uint128 gasPrice, uint128 exchangeRate, uint96 overhead) external onlyOwner {
        oracles[destination] = Oracle(gasPrice, exchangeRate, overhead);
        emit OracleSet(destination, gasPrice, exchangeRate, overhead);
    }

    /// @notice Sets who may claim the payments.
    function setBeneficiary(address beneficiary_) external onlyOwner {
        beneficiary = beneficiary_;
        emit BeneficiarySet(beneficiary_);
    }

    /// @notice The payment, in this chain's native token, for `gasLimit` gas of a
    ///         delivery on `destination`: (gasLimit + overhead) * gasPrice * rate.
    function quoteGasPayment(uint32 destination, uint256 gasLimit) public view returns (uint256) {
        Oracle memory oracle = oracles[destination];
        if (oracle.exchangeRate == 0) revert NoQuote(destination);
        return (gasLimit + oracle.overhead) * oracle.gasPrice * oracle.exchangeRate / RATE_SCALE;
    }

    /// @notice Pays for `gasLimit` gas of message `id`'s delivery on `destination` (again
    ///         for a top-up); what was sent over the quote goes back to `refund`.
    function payForGas(bytes32 id, uint32 destination, uint256 gasLimit, address refund) external payable {
        uint256 fee = quoteGasPayment(destination, gasLimit);
        if (msg.value < fee) revert Underpaid(fee, msg.value);
        Payment storage payment = payments[id];
        payment.gas += gasLimit + oracles[destination].overhead;
        payment.fee += fee;
        emit GasPayment(id, destination, gasLimit, fee);
        uint256 change = msg.value - fee;
        if (change > 0) _send(refund, change);
    }

    /// @notice Moves every payment held here to `to`; the beneficiary only.
    function claim(address to) external {
        if (msg.sender != beneficiary) revert NotBeneficiary(msg.sender);
        uint256 amount = address(this).balance;
        emit Claimed(to, amount);
        _send(to, amount);
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
