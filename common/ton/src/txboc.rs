//! The compute exit code of a transaction from its BoC (toncenter v2 `getTransactions` gives
//! the transaction only as `data`): TL-B `Transaction` → `TransactionDescr` (ordinary) →
//! `TrComputePhase`.

use tonlib_core::cell::{BagOfCells, Cell, CellParser, TonCellError};

/// The compute phase's exit code of an ordinary transaction; `None` when the phase was skipped,
/// the transaction is not ordinary, or the BoC does not parse.
pub fn compute_exit_code(boc: &[u8]) -> Option<i32> {
    let root = BagOfCells::parse(boc).ok()?.single_root().ok()?;
    // description:^TransactionDescr is the root's last reference (after the message refs, an
    // extra-currency dictionary if any, and state_update).
    let descr = root.references().last()?.clone();
    ordinary_exit_code(&descr).ok().flatten()
}

fn ordinary_exit_code(descr: &Cell) -> Result<Option<i32>, TonCellError> {
    let mut p = descr.parser();
    // trans_ord$0000
    if p.load_u8(4)? != 0 {
        return Ok(None);
    }
    let _credit_first = p.load_bit()?;
    // storage_ph:(Maybe TrStoragePhase)
    if p.load_bit()? {
        p.load_coins()?;
        if p.load_bit()? {
            p.load_coins()?;
        }
        // acst_unchanged$0 | acst_frozen$10 | acst_deleted$11
        if p.load_bit()? {
            p.load_bit()?;
        }
    }
    // credit_ph:(Maybe TrCreditPhase)
    if p.load_bit()? {
        if p.load_bit()? {
            p.load_coins()?;
        }
        currency_collection(&mut p)?;
    }
    // compute_ph: tr_phase_compute_skipped$0 | tr_phase_compute_vm$1
    if !p.load_bit()? {
        return Ok(None);
    }
    let _success = p.load_bit()?;
    let _msg_state_used = p.load_bit()?;
    let _account_activated = p.load_bit()?;
    let _gas_fees = p.load_coins()?;
    let vm = p.next_reference()?;
    let mut v = vm.parser();
    var_uint(&mut v, 3)?; // gas_used:(VarUInteger 7)
    var_uint(&mut v, 3)?; // gas_limit:(VarUInteger 7)
    if v.load_bit()? {
        var_uint(&mut v, 2)?; // gas_credit:(VarUInteger 3)
    }
    let _mode = v.load_i8(8)?;
    Ok(Some(v.load_i32(32)?))
}

/// `CurrencyCollection`: grams and an extra-currency dictionary (a bit, and a reference when set).
fn currency_collection(p: &mut CellParser<'_>) -> Result<(), TonCellError> {
    p.load_coins()?;
    if p.load_bit()? {
        p.next_reference()?;
    }
    Ok(())
}

/// `VarUInteger n` with a length field of `len_bits`.
fn var_uint(p: &mut CellParser<'_>, len_bits: usize) -> Result<(), TonCellError> {
    let len = usize::from(p.load_u8(len_bits)?);
    p.skip_bits(len * 8)
}
