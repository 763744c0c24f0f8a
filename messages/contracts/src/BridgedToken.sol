// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title BridgedToken
/// @notice The synthetic side of a bridged ERC-20: only its bridge mints and burns.
/// @dev The deployer names the bridge once, after deploying it (the bridge needs this
///      token's address at construction).
contract BridgedToken is ERC20 {
    uint8 private immutable _decimals;
    address private immutable _deployer;
    /// @notice The TokenBridge allowed to mint and burn.
    address public bridge;

    event BridgeSet(address bridge);

    error NotBridge(address caller);
    error BridgeAlreadySet(address bridge);
    error NotDeployer(address caller);

    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
        _deployer = msg.sender;
    }

    /// @notice Names the bridge; callable once, by the deployer.
    function setBridge(address bridge_) external {
        if (msg.sender != _deployer) revert NotDeployer(msg.sender);
        if (bridge != address(0)) revert BridgeAlreadySet(bridge);
        bridge = bridge_;
        emit BridgeSet(bridge_);
    }

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// @notice Mints bridged tokens; bridge only.
    function mint(address to, uint256 amount) external {
        if (msg.sender != bridge) revert NotBridge(msg.sender);
        _mint(to, amount);
    }

    /// @notice Burns bridged tokens that are leaving; bridge only.
    function burn(address from, uint256 amount) external {
        if (msg.sender != bridge) revert NotBridge(msg.sender);
        _burn(from, amount);
    }
}
