//! The GasPaymaster on a real anvil devnet: the quote follows the oracle, a transfer pays
//! its own delivery (the excess refunded), a top-up adds to an id's payment, an
//! unconfigured destination has no quote, and only the beneficiary claims.

mod common;

use alloy::{
    primitives::{B256, U256},
    providers::Provider,
};
use common::mined;
use ferry_messages::contracts::{GasPaymaster, TestToken, TokenBridge};

#[tokio::test]
async fn a_transfer_pays_its_quote_top_ups_add_and_only_the_beneficiary_claims() {
    let devnet = common::devnet().await;
    let info = devnet.info().clone();
    let [alpha, _] = devnet.deployments().clone();
    let pricing = alpha.gas_payment.expect("the devnet prices deliveries");
    let paymaster_address = alpha.paymaster.expect("the devnet deploys a paymaster");
    let alice = info.accounts[0].clone();
    let provider = common::wallet(&info.chains[0].rpc_url, alice.private_key);
    let paymaster = GasPaymaster::new(paymaster_address, &provider);
    let bridge = TokenBridge::new(alpha.bridge, &provider);

    // The quote is (gas + overhead) * price * rate / 1e10, and the bridge asks for its own.
    let expected = U256::from(pricing.delivery_gas + pricing.overhead)
        * U256::from(pricing.gas_price)
        * U256::from(pricing.exchange_rate)
        / U256::from(10_000_000_000u64);
    let quote = paymaster.quoteGasPayment(31338, U256::from(pricing.delivery_gas)).call().await.unwrap();
    assert_eq!(quote, expected);
    assert_eq!(bridge.quoteTransferRemote(31338).call().await.unwrap(), quote);
    assert!(paymaster.quoteGasPayment(999, U256::from(1)).call().await.is_err(), "no oracle, no quote");

    // Underpaid: refused. Overpaid: the excess comes back.
    mined(TestToken::new(alpha.token, &provider).approve(alpha.bridge, U256::from(1_000)).send().await).await;
    let short = bridge.transferRemote(31338, alice.address, U256::from(10)).value(quote - U256::from(1));
    assert!(short.call().await.is_err(), "an underpaid transfer went through");
    let before = provider.get_balance(alice.address).await.unwrap();
    let receipt = mined(
        bridge
            .transferRemote(31338, alice.address, U256::from(10))
            .value(quote * U256::from(3))
            .gas(common::TX_GAS)
            .send()
            .await,
    )
    .await;
    let spent = before - provider.get_balance(alice.address).await.unwrap();
    let gas = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert_eq!(spent, quote + gas, "the excess was not refunded");
    let id = common::dispatches(&receipt)[0].id;
    let paid = paymaster.payments(id).call().await.unwrap();
    assert_eq!((paid.gas, paid.fee), (U256::from(pricing.delivery_gas + pricing.overhead), quote));

    // A top-up adds to the id.
    let more = paymaster.quoteGasPayment(31338, U256::from(50_000)).call().await.unwrap();
    mined(paymaster.payForGas(id, 31338, U256::from(50_000), alice.address).value(more).send().await).await;
    let paid = paymaster.payments(id).call().await.unwrap();
    let gas = pricing.delivery_gas + 50_000 + 2 * pricing.overhead;
    assert_eq!((paid.gas, paid.fee), (U256::from(gas), quote + more));

    // Only the beneficiary claims, and it takes everything.
    let held = provider.get_balance(paymaster_address).await.unwrap();
    assert_eq!(held, quote + more);
    assert!(paymaster.claim(alice.address).call().await.is_err(), "a stranger claimed");
    let beneficiary = info.accounts.iter().find(|a| a.address == pricing.beneficiary).unwrap();
    let relayer = common::wallet(&info.chains[0].rpc_url, beneficiary.private_key);
    let to = B256::repeat_byte(0x42);
    let to = alloy::primitives::Address::from_word(to);
    mined(GasPaymaster::new(paymaster_address, &relayer).claim(to).send().await).await;
    assert_eq!(provider.get_balance(to).await.unwrap(), held);
    assert_eq!(provider.get_balance(paymaster_address).await.unwrap(), U256::ZERO);
}
