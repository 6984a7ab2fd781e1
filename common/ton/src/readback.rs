//! Reading the oracle: its get-methods (`get_price`, `get_bridge_status`), and whether a sent
//! update shows there.

use tonlib_core::TonAddress;

use super::oracle::{OracleMessage, OracleUpdate};
use super::report::ReadBack;
use super::transport::{StackValue, TonTransport, TransportError};

/// A get-method's answer and the oracle's last transaction lt it ran at (0: the endpoint did
/// not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAt<V> {
    /// The answer.
    pub value: V,
    /// `last_transaction_id.lt` of the run; 0 when not reported.
    pub lt: u64,
}

/// `get_price(asset_id)` → `(price_micro, timestamp)`.
pub async fn read_price<T: TonTransport>(
    transport: &T,
    oracle: &TonAddress,
    asset_id: u16,
) -> Result<(u128, u32), TransportError> {
    Ok(read_price_at(transport, oracle, asset_id).await?.value)
}

/// [`read_price`] with the lt it ran at.
pub async fn read_price_at<T: TonTransport>(
    transport: &T,
    oracle: &TonAddress,
    asset_id: u16,
) -> Result<ReadAt<(u128, u32)>, TransportError> {
    let r = transport
        .run_get_method(oracle, "get_price", &[i64::from(asset_id)])
        .await?;
    Ok(ReadAt {
        value: two_numbers("get_price", &r.exit_code, &r.stack)?,
        lt: r.last_transaction_lt,
    })
}

/// `get_bridge_status(bridge_id)` → `(is_online, last_seen)`; TVM true is -1, any non-zero counts.
pub async fn read_bridge_status<T: TonTransport>(
    transport: &T,
    oracle: &TonAddress,
    bridge_id: u8,
) -> Result<(bool, u32), TransportError> {
    Ok(read_bridge_status_at(transport, oracle, bridge_id)
        .await?
        .value)
}

/// [`read_bridge_status`] with the lt it ran at.
pub async fn read_bridge_status_at<T: TonTransport>(
    transport: &T,
    oracle: &TonAddress,
    bridge_id: u8,
) -> Result<ReadAt<(bool, u32)>, TransportError> {
    let r = transport
        .run_get_method(oracle, "get_bridge_status", &[i64::from(bridge_id)])
        .await?;
    if !(r.exit_code == 0 || r.exit_code == 1) {
        return Err(TransportError::Decode {
            method: "get_bridge_status",
            problem: format!("exit code {}", r.exit_code),
        });
    }
    let online = match r.stack.first() {
        Some(StackValue::Num(n)) => n != &num_bigint::BigInt::default(),
        _ => {
            return Err(TransportError::Decode {
                method: "get_bridge_status",
                problem: "first stack item is not a number".into(),
            });
        }
    };
    let last_seen = r
        .stack
        .get(1)
        .and_then(StackValue::as_u64)
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| TransportError::Decode {
            method: "get_bridge_status",
            problem: "second stack item is not a u32".into(),
        })?;
    Ok(ReadAt {
        value: (online, last_seen),
        lt: r.last_transaction_lt,
    })
}

fn two_numbers(
    method: &'static str,
    exit_code: &i32,
    stack: &[StackValue],
) -> Result<(u128, u32), TransportError> {
    if !(*exit_code == 0 || *exit_code == 1) {
        return Err(TransportError::Decode {
            method,
            problem: format!("exit code {exit_code}"),
        });
    }
    let value =
        stack
            .first()
            .and_then(StackValue::as_u128)
            .ok_or_else(|| TransportError::Decode {
                method,
                problem: "first stack item is not a non-negative number".into(),
            })?;
    let ts = stack
        .get(1)
        .and_then(StackValue::as_u64)
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| TransportError::Decode {
            method,
            problem: "second stack item is not a u32".into(),
        })?;
    Ok((value, ts))
}

/// What `m` publishes, not yet seen on chain.
fn expected(m: &OracleMessage) -> ReadBack {
    let (id, expected_value, expected_timestamp) = match &m.update {
        OracleUpdate::Price(p) => (p.asset_id, u128::from(p.price_micro), p.timestamp),
        OracleUpdate::BridgeStatus(b) => {
            (u16::from(b.bridge_id), u128::from(b.is_online), b.last_seen)
        }
    };
    ReadBack {
        op: m.update.op_name().to_owned(),
        subject: m.update.subject().to_owned(),
        id,
        expected_value,
        expected_timestamp,
        onchain_value: None,
        onchain_timestamp: None,
        landed: false,
        error: None,
        unpaid: false,
    }
}

/// An update the wallet's action phase skipped for lack of funds: it was never sent, so the
/// oracle is not read for it.
pub(super) fn unpaid(m: &OracleMessage) -> ReadBack {
    ReadBack {
        error: Some(
            "not sent: the wallet could not pay for it (skipped in its action phase); top it up"
                .into(),
        ),
        unpaid: true,
        ..expected(m)
    }
}

/// An update whose oracle transaction exited 0: the oracle stored it as sent (it refuses an
/// older one with an error), so its get-method would only repeat it.
pub(super) fn applied(m: &OracleMessage) -> ReadBack {
    let r = expected(m);
    ReadBack {
        onchain_value: Some(r.expected_value),
        onchain_timestamp: Some(r.expected_timestamp),
        landed: true,
        ..r
    }
}

/// Reads `m`'s subject back from the oracle.
pub(super) async fn read_one<T: TonTransport>(transport: &T, m: &OracleMessage) -> ReadBack {
    let mut r = expected(m);
    match &m.update {
        OracleUpdate::Price(p) => match read_price(transport, &m.to, p.asset_id).await {
            Ok((price, ts)) => {
                r.onchain_value = Some(price);
                r.onchain_timestamp = Some(ts);
                r.landed =
                    ts > p.timestamp || (ts == p.timestamp && price == u128::from(p.price_micro));
            }
            Err(e) => r.error = Some(e.to_string()),
        },
        OracleUpdate::BridgeStatus(b) => {
            match read_bridge_status(transport, &m.to, b.bridge_id).await {
                Ok((online, ts)) => {
                    r.onchain_value = Some(u128::from(online));
                    r.onchain_timestamp = Some(ts);
                    r.landed = ts > b.last_seen || (ts == b.last_seen && online == b.is_online);
                }
                Err(e) => r.error = Some(e.to_string()),
            }
        }
    }
    r
}
